"""Fleet operations' decisions (pure): the imbalance metric and the balancing recommender.

``model`` (hosts and VMs as the recommender sees them, a move, a recommendation),
``imbalance`` (the standard deviation of host load, and the hysteresis rule of a continuous
mode), ``state`` (a fleet's per-host sums and the rules a move must keep) and ``balance``
(``recommend``: the fewest, cheapest moves that bring the imbalance under a threshold).
Nothing here reads a store or touches a host; docs/operations.md explains the rules.
"""

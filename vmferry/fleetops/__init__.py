"""Fleet operations' decisions (pure): the imbalance metric and the balancing recommender.

``model`` (hosts and VMs as the recommender sees them, a move, a recommendation),
``imbalance`` (the standard deviation of host load, and the hysteresis rule of a continuous
mode), ``state`` (a fleet's per-host sums and the rules a move must keep) and ``balance``
(``recommend``: the fewest, cheapest moves that bring the imbalance under a threshold);
``maintenance`` (a host's evacuation), ``consolidate`` (which hosts to empty and the moves),
``packing_bound`` (a lower bound on the hosts that stay) and ``power`` (DPM's band: which
standby hosts to wake, whether consolidation may run). Nothing here reads a store or
touches a host; docs/operations.md explains the rules.
"""

"""After a move: prove the VM runs where it should, and that nothing was lost."""

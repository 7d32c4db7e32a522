"""Will it fit: the largest batch or sequence length under a memory budget (`harness fit`)."""

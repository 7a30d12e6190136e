"""Small, runnable examples of using streamrec from other services."""

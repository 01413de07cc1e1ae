"""What runs around training: the hardware resolved once, Ctrl+C and SIGTERM, resume,
checkpoints, a sweep job's share of the cores, and the one next-free-name rule."""

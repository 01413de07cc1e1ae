"""What runs around training: the hardware resolved once, Ctrl+C and SIGTERM, resume,
checkpoints (and the check of a damaged one), sweeps that continue (sweep_resume,
optuna_resume), a sweep job's share of the cores, the full-disk paragraph (disk), commands
that end promptly (exits), and the one next-free-name rule."""

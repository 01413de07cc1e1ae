"""Curricula: runs made of phases, each nothing but Hydra overrides of the run's config
(``phases`` parses them, ``runner`` runs them, ``context`` is what a phase's training sees)."""

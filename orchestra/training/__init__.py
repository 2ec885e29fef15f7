"""Training: learned routers (kNN, MLP, matrix factorisation) and their CLI."""

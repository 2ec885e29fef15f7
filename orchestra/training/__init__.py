"""Training: learned routers (kNN, MLP, MF) and the GNN, run as Ray jobs."""

"""Business logic, one module per resource. Functions take a Session, never commit, never import FastAPI."""

"""The offline checks `make deploy-check` runs (deploy/check.py), one module per kind of mistake."""

terraform {
  required_version = ">= 1.9.0, < 2.0.0"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "= 6.49.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "= 3.7.2"
    }
  }
  # The state lives in a bucket made before the first apply (README, "Deploy to GKE", step 1):
  #   terraform init -backend-config="bucket=<project_id>-tfstate"
  # CI's release job reads the outputs from it (deploy/render.py).
  backend "gcs" {
    prefix = "recsys"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

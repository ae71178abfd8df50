terraform {
  required_version = ">= 1.9.0, < 2.0.0"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "= 6.49.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

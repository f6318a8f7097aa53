# terraform apply -var-file=example.tfvars (copy and edit).
project_id = "acme-prod"

functions_1st_gen = {
  orders-db = { name = "grant-orders-db", region = "us-central1" }
}

functions_2nd_gen = {
  crm = { service = "grant-crm", location = "europe-west1" }
}

gke_workload_identity = { namespace = "grantbridge", ksa = "grantbridge" }

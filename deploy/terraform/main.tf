# The Google side of a grantbridge deployment: its service account, invoker
# rights on each function, and how the workload gets to act as the account
# (GKE Workload Identity or impersonation). No key is created here: keys are a
# last resort (docs/gcp-setup.md).
#
#   terraform init && terraform apply -var project_id=acme-prod \
#     -var-file=grantbridge.tfvars

terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.0, < 8.0"
    }
  }
}

locals {
  sa_member = "serviceAccount:${google_service_account.grantbridge.email}"
  wi_project = var.gke_workload_identity == null ? null : coalesce(
    var.gke_workload_identity.project, var.project_id
  )
}

resource "google_service_account" "grantbridge" {
  project      = var.project_id
  account_id   = var.service_account_id
  display_name = "grantbridge connector"
  description  = "Invokes the access-management Cloud Functions on behalf of the control plane (grantbridge)."
}

# 1st gen: invoke (and, optionally, view) each function. Bound on the
# function, never project-wide.
resource "google_cloudfunctions_function_iam_member" "invoker" {
  for_each       = var.functions_1st_gen
  project        = coalesce(each.value.project, var.project_id)
  region         = each.value.region
  cloud_function = each.value.name
  role           = "roles/cloudfunctions.invoker"
  member         = local.sa_member
}

resource "google_cloudfunctions_function_iam_member" "viewer" {
  for_each       = var.grant_viewer ? var.functions_1st_gen : {}
  project        = coalesce(each.value.project, var.project_id)
  region         = each.value.region
  cloud_function = each.value.name
  role           = "roles/cloudfunctions.viewer"
  member         = local.sa_member
}

# 2nd gen functions are Cloud Run services: roles/run.invoker on the service.
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = var.functions_2nd_gen
  project  = coalesce(each.value.project, var.project_id)
  location = each.value.location
  name     = each.value.service
  role     = "roles/run.invoker"
  member   = local.sa_member
}

# GKE Workload Identity: the KSA NAMESPACE/KSA acts as this service account.
# The KSA carries iam.gke.io/gcp-service-account = the account's email.
resource "google_service_account_iam_member" "workload_identity" {
  count              = var.gke_workload_identity == null ? 0 : 1
  service_account_id = google_service_account.grantbridge.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${local.wi_project}.svc.id.goog[${var.gke_workload_identity.namespace}/${var.gke_workload_identity.ksa}]"
}

# Impersonation (credentials = "impersonate"): the source identities may mint
# ID tokens as this account through IAM Credentials generateIdToken.
resource "google_service_account_iam_member" "token_creator" {
  for_each           = toset(var.impersonators)
  service_account_id = google_service_account.grantbridge.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = each.value
}

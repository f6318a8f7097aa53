output "service_account_email" {
  description = "Put it in the KSA annotation iam.gke.io/gcp-service-account (Helm: serviceAccount.gcpServiceAccount) or impersonate's target_service_account."
  value       = google_service_account.grantbridge.email
}

output "workload_identity_member" {
  description = "The Kubernetes principal bound with roles/iam.workloadIdentityUser, if any."
  value       = length(google_service_account_iam_member.workload_identity) > 0 ? google_service_account_iam_member.workload_identity[0].member : null
}

output "ksa_annotation" {
  description = "The annotation to put on the Kubernetes ServiceAccount."
  value       = { "iam.gke.io/gcp-service-account" = google_service_account.grantbridge.email }
}

output "function_1st_gen_urls" {
  description = "Default 1st gen URLs (also the ID token audiences) of the functions granted."
  value = {
    for k, f in var.functions_1st_gen :
    k => "https://${f.region}-${coalesce(f.project, var.project_id)}.cloudfunctions.net/${f.name}"
  }
}

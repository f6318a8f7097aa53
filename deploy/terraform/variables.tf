variable "project_id" {
  description = "Project that holds grantbridge's service account (and, by default, the functions)."
  type        = string
}

variable "service_account_id" {
  description = "Account id of grantbridge's Google service account (the part before @)."
  type        = string
  default     = "grantbridge"
}

variable "functions_1st_gen" {
  description = "Cloud Functions (1st gen) grantbridge may invoke, keyed by a name of your choice. project defaults to project_id."
  type = map(object({
    name    = string
    region  = string
    project = optional(string)
  }))
  default = {}
}

variable "functions_2nd_gen" {
  description = "Cloud Functions 2nd gen / Cloud Run services grantbridge may invoke (roles/run.invoker on the service), keyed by a name of your choice. service is the Cloud Run service name (for 2nd gen functions, the function's name)."
  type = map(object({
    service  = string
    location = string
    project  = optional(string)
  }))
  default = {}
}

variable "grant_viewer" {
  description = "Also grant roles/cloudfunctions.viewer on each 1st gen function (lets `grantbridge check --online` read the function's metadata)."
  type        = bool
  default     = true
}

variable "gke_workload_identity" {
  description = "GKE Workload Identity: let this Kubernetes ServiceAccount act as the Google service account. null: no binding. project defaults to project_id (the cluster's project: the pool is PROJECT.svc.id.goog)."
  type = object({
    namespace = string
    ksa       = string
    project   = optional(string)
  })
  default = {
    namespace = "grantbridge"
    ksa       = "grantbridge"
  }
}

variable "impersonators" {
  description = "Principals (e.g. serviceAccount:vm-runner@p.iam.gserviceaccount.com) that may mint tokens as grantbridge's service account (roles/iam.serviceAccountTokenCreator), for credentials = \"impersonate\"."
  type        = list(string)
  default     = []
}

//! Google Cloud naming rules the configuration is checked against: Cloud
//! Functions (1st gen) regions, function names, project ids, service-account
//! emails. Pure functions; no I/O.

/// Regions where Cloud Functions (1st gen) can be deployed (Tier 1 and Tier 2).
pub const FIRST_GEN_REGIONS: &[&str] = &[
    // Tier 1
    "asia-east1",
    "asia-east2",
    "asia-northeast1",
    "asia-northeast2",
    "europe-west1",
    "europe-west2",
    "us-central1",
    "us-east1",
    "us-east4",
    "us-west1",
    // Tier 2
    "asia-northeast3",
    "asia-south1",
    "asia-southeast1",
    "asia-southeast2",
    "australia-southeast1",
    "europe-central2",
    "europe-west3",
    "europe-west6",
    "northamerica-northeast1",
    "southamerica-east1",
    "us-west2",
    "us-west3",
    "us-west4",
];

pub const DEFAULT_REGION: &str = "us-central1";

/// Cloud Functions naming rule: starts with a letter, then letters, digits,
/// `-` or `_`, ends with a letter or digit, at most 63 characters. Deployed
/// names are lower case.
pub fn check_function_name(name: &str) -> Result<(), String> {
    let ok_len = (1..=63).contains(&name.len());
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let body_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    let last_ok = name
        .chars()
        .last()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok_len && first_ok && body_ok && last_ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid Cloud Functions name; expected 1-63 characters: a lower-case letter first, then lower-case letters, digits, `-` or `_`, ending with a letter or digit"
        ))
    }
}

/// GCP project id rule: 6-30 characters, lower-case letters, digits and `-`,
/// starting with a letter and not ending with `-`.
pub fn check_project_id(id: &str) -> Result<(), String> {
    let ok = (6..=30).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a valid project id; expected 6-30 characters of lower-case letters, digits and `-`, starting with a letter (the project ID, not the project name or number)"
        ))
    }
}

pub fn check_region(region: &str) -> Result<(), String> {
    if FIRST_GEN_REGIONS.contains(&region) {
        Ok(())
    } else {
        Err(format!(
            "`{region}` is not a Cloud Functions (1st gen) region; expected one of {}. For a 2nd gen function or Cloud Run service, set `url` to its URL",
            FIRST_GEN_REGIONS.join(", ")
        ))
    }
}

/// A service-account email, as used for impersonation targets and delegates.
pub fn check_service_account_email(email: &str) -> Result<(), String> {
    let ok = email.split_once('@').is_some_and(|(user, domain)| {
        !user.is_empty() && domain.contains('.') && !domain.starts_with('.')
    }) && !email.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{email}` is not a service-account email (expected NAME@PROJECT.iam.gserviceaccount.com)"
        ))
    }
}

/// The 1st gen HTTPS trigger URL.
pub fn first_gen_url(region: &str, project_id: &str, function: &str) -> String {
    format!("https://{region}-{project_id}.cloudfunctions.net/{function}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn function_names() {
        assert!(check_function_name("grant-orders-db").is_ok());
        assert!(check_function_name("grant_db2").is_ok());
        for bad in [
            "",
            "1grant",
            "Grant",
            "grant-",
            "gr ant",
            "grant.db",
            &"a".repeat(64),
        ] {
            assert!(check_function_name(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn project_ids() {
        assert!(check_project_id("acme-prod").is_ok());
        for bad in ["acme", "Acme-prod", "acme-prod-", "9acme-prod", "acme_prod"] {
            assert!(check_project_id(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn regions() {
        assert!(check_region("us-central1").is_ok());
        assert!(check_region("europe-west4").is_err(), "2nd gen only");
        let msg = check_region("us-cental1").unwrap_err();
        assert!(msg.contains("us-central1") && msg.contains("url"));
    }

    #[test]
    fn first_gen_url_shape() {
        assert_eq!(
            first_gen_url("us-central1", "acme-prod", "grant-db"),
            "https://us-central1-acme-prod.cloudfunctions.net/grant-db"
        );
    }

    proptest! {
        #[test]
        fn valid_function_names_make_valid_https_urls(name in "[a-z][a-z0-9_-]{0,61}[a-z0-9]") {
            prop_assert!(check_function_name(&name).is_ok());
            let url = first_gen_url("us-central1", "acme-prod", &name);
            prop_assert!(crate::http::checked_url(&url, false).is_ok());
        }

        #[test]
        fn checkers_never_panic(s in ".{0,80}") {
            let _ = check_function_name(&s);
            let _ = check_project_id(&s);
            let _ = check_region(&s);
            let _ = check_service_account_email(&s);
        }
    }
}

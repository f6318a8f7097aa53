//! A grantbridge configuration file, built with typed methods instead of TOML
//! assembled by hand: what the demo, `grantbridge sandbox` and the tests write.
//!
//! Written from the configuration reference (docs/configuration.md), not with
//! grantbridge's own types, so the connector's real loader is what reads it.
//! Every method takes and returns the builder; [`DaemonConfig::set`] reaches
//! any key the typed methods do not name.

use std::path::Path;

use toml::{Table, Value};

/// A grantbridge configuration file under construction.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    root: Table,
}

/// One `[integrations.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    table: Table,
}

impl Integration {
    /// The function `function` of `project_id` at `url`, called with `connection`.
    pub fn new(connection: &str, project_id: &str, function: &str, url: &str) -> Self {
        let mut table = Table::new();
        table.insert("connection".into(), connection.into());
        table.insert("project_id".into(), project_id.into());
        table.insert("function".into(), function.into());
        table.insert("url".into(), url.into());
        Self { table }
    }

    /// `custom_parameters`, from a JSON object (nested objects become tables).
    pub fn custom_parameters(mut self, params: serde_json::Value) -> Self {
        self.table
            .insert("custom_parameters".into(), json_to_toml(params));
        self
    }

    /// Any other key of the table (`timeout`, `max_attempts`, ...).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.table.insert(key.into(), value.into());
        self
    }
}

impl DaemonConfig {
    /// A configuration for `connector_id` that may call loopback over plain
    /// HTTP (the sandbox serves no TLS).
    pub fn new(connector_id: &str) -> Self {
        Self { root: Table::new() }
            .set("connector_id", connector_id)
            .set("http.allow_insecure_loopback", true)
    }

    pub fn instance_id(self, id: &str) -> Self {
        self.set("instance_id", id)
    }

    /// `[connections.NAME]` with a service-account key file.
    pub fn key_file_connection(self, name: &str, key_file: &Path) -> Self {
        self.set(
            &format!("connections.{name}.credentials"),
            "service_account_key",
        )
        .set(
            &format!("connections.{name}.key_file"),
            key_file.display().to_string(),
        )
    }

    /// `[integrations.NAME]`.
    pub fn integration(mut self, name: &str, integration: Integration) -> Self {
        table_at(&mut self.root, &["integrations"]).insert(name.into(), integration.table.into());
        self
    }

    /// The same key set on every integration configured so far.
    pub fn every_integration(mut self, key: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        for integration in table_at(&mut self.root, &["integrations"])
            .iter_mut()
            .map(|(_, v)| v)
        {
            if let Value::Table(t) = integration {
                t.insert(key.into(), value.clone());
            }
        }
        self
    }

    /// `[control_plane]` at `url`, the connector token read from `token_env`.
    /// Short waits and heartbeats, as tests and the demo want them.
    pub fn control_plane(self, url: &str, token_env: &str) -> Self {
        self.set("control_plane.url", url)
            .set("control_plane.token_env", token_env)
            .set("control_plane.wait", "1s")
            .set("control_plane.lease", "30s")
            .set("control_plane.heartbeat_interval", "1s")
    }

    /// `[push]` on 127.0.0.1, an ephemeral port, with one secret file.
    pub fn push(self, secret_file: &Path) -> Self {
        self.set("push.listen", "127.0.0.1:0").set(
            "push.secret_files",
            vec![Value::from(secret_file.display().to_string())],
        )
    }

    /// `[journal] path`.
    pub fn journal(self, path: &Path) -> Self {
        self.set("journal.path", path.display().to_string())
    }

    /// `[admin]` on 127.0.0.1, an ephemeral port.
    pub fn admin(self) -> Self {
        self.set("admin.listen", "127.0.0.1:0")
    }

    /// A configuration file as written (a shipped example, to adapt).
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        Ok(Self {
            root: toml::from_str(text)?,
        })
    }

    /// Sets a key by its dotted path (`engine.max_concurrency`), creating the
    /// tables on the way.
    pub fn set(mut self, dotted: &str, value: impl Into<Value>) -> Self {
        let path: Vec<&str> = dotted.split('.').collect();
        let (key, tables) = path.split_last().expect("split yields one part at least");
        table_at(&mut self.root, tables).insert((*key).into(), value.into());
        self
    }

    /// Removes a key by its dotted path, if present.
    pub fn remove(mut self, dotted: &str) -> Self {
        let path: Vec<&str> = dotted.split('.').collect();
        let (key, tables) = path.split_last().expect("split yields one part at least");
        table_at(&mut self.root, tables).remove(*key);
        self
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.root).expect("a table of plain values serialises")
    }

    /// Writes the file.
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_toml())
    }
}

/// The table at `path` below `root`, created when missing (a non-table value
/// in the way is replaced).
fn table_at<'t>(root: &'t mut Table, path: &[&str]) -> &'t mut Table {
    let mut table = root;
    for part in path {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        table = entry.as_table_mut().expect("made a table just above");
    }
    table
}

fn json_to_toml(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::String(String::new()),
        J::Bool(b) => Value::Boolean(b),
        J::Number(n) => n
            .as_i64()
            .map(Value::Integer)
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0))),
        J::String(s) => Value::String(s),
        J::Array(a) => Value::Array(a.into_iter().map(json_to_toml).collect()),
        J::Object(o) => Value::Table(o.into_iter().map(|(k, v)| (k, json_to_toml(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_tables_and_dotted_keys() {
        let text = DaemonConfig::new("test")
            .key_file_connection("prod", Path::new("/k/sa.json"))
            .integration(
                "orders-db",
                Integration::new("prod", "p", "grant-db", "http://127.0.0.1:1/grant-db")
                    .custom_parameters(serde_json::json!({"team": "x", "nested": {"a": 1}})),
            )
            .every_integration("max_attempts", 3)
            .set("engine.shutdown_grace", "5s")
            .remove("engine.shutdown_grace")
            .to_toml();
        let back: Table = toml::from_str(&text).unwrap();
        assert_eq!(back["connector_id"].as_str(), Some("test"));
        assert_eq!(
            back["http"]["allow_insecure_loopback"].as_bool(),
            Some(true)
        );
        let i = &back["integrations"]["orders-db"];
        assert_eq!(i["max_attempts"].as_integer(), Some(3));
        assert_eq!(i["custom_parameters"]["nested"]["a"].as_integer(), Some(1));
        assert!(back["engine"].as_table().unwrap().is_empty());
    }
}

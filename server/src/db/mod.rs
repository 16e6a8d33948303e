//! Database access: connection set-up, migrations, entities.

pub mod entities;

use crate::config::DatabaseUrl;
use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DbSetupError {
    #[error("cannot create the directory of the SQLite database {0}: {1}")]
    SqliteDir(String, std::io::Error),
    #[error("cannot connect to the database {url}: {source}")]
    Connect { url: String, source: DbErr },
    #[error("database migration failed: {0}")]
    Migrate(DbErr),
}

/// Connect to `url`. For SQLite the parent directory of the file is
/// created and the database switched to WAL mode.
pub async fn connect(url: &DatabaseUrl) -> Result<DatabaseConnection, DbSetupError> {
    if let Some(path) = sqlite_path(url.as_str()) {
        if let Some(parent) = Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| DbSetupError::SqliteDir(parent.display().to_string(), e))?;
            }
        }
    }
    let mut opts = ConnectOptions::new(url.as_str().to_owned());
    opts.sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .max_connections(16);
    let db = Database::connect(opts)
        .await
        .map_err(|source| DbSetupError::Connect {
            url: url.redacted(),
            source,
        })?;
    if db.get_database_backend() == DbBackend::Sqlite && sqlite_path(url.as_str()).is_some() {
        db.execute_unprepared("PRAGMA journal_mode=WAL")
            .await
            .map_err(|source| DbSetupError::Connect {
                url: url.redacted(),
                source,
            })?;
    }
    Ok(db)
}

/// Bring the schema up to date.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbSetupError> {
    Migrator::up(db, None).await.map_err(DbSetupError::Migrate)
}

/// The file path of a `sqlite:` URL, `None` for in-memory or non-SQLite URLs.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(path)
    }
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://mado-data/mado.db?mode=rwc"),
            Some("mado-data/mado.db")
        );
        assert_eq!(sqlite_path("sqlite:///tmp/x.db"), Some("/tmp/x.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x/y"), None);
    }
}

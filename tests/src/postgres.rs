//! A fresh PostgreSQL database per test (`mado_e2e_<uuid>`), dropped on drop.

use anyhow::{Context, Result};
use sea_orm::{ConnectionTrait, Database};

/// Admin URL: `MADO_E2E_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn admin_url() -> String {
    std::env::var("MADO_E2E_PG_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub struct PgDb {
    pub name: String,
    /// URL of the fresh database.
    pub url: String,
    admin: String,
}

fn with_db(admin: &str, db: &str) -> String {
    match admin.rsplit_once('/') {
        Some((base, _)) if base.contains("://") && base.matches('/').count() >= 2 => {
            format!("{base}/{db}")
        }
        _ => format!("{admin}/{db}"),
    }
}

/// Create `mado_e2e_<uuid>`; fails with a hint if PostgreSQL is not reachable.
pub async fn fresh_postgres_db() -> Result<PgDb> {
    let admin = admin_url();
    let name = format!("mado_e2e_{}", uuid::Uuid::new_v4().simple());
    let conn = Database::connect(&admin).await.with_context(|| {
        format!(
            "connecting to PostgreSQL at {admin} (set MADO_E2E_PG_URL, or run scripts/install-test-deps.sh, which starts PostgreSQL with trust auth on 127.0.0.1:5432)"
        )
    })?;
    conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
    let _ = conn.close().await;
    Ok(PgDb {
        url: with_db(&admin, &name),
        name,
        admin,
    })
}

impl PgDb {
    async fn drop_db(admin: String, name: String) -> Result<()> {
        let conn = Database::connect(&admin).await?;
        conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await?;
        let _ = conn.close().await;
        Ok(())
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if std::env::var("MADO_E2E_KEEP").is_ok_and(|v| v == "1") {
            eprintln!("kept database {}", self.name);
            return;
        }
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside (or outside) a runtime: use a thread with its own.
        let r = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(PgDb::drop_db(admin, name))
        })
        .join();
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: dropping database {}: {e:#}", self.name),
            Err(_) => eprintln!("warning: dropping database {}: thread panicked", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn db_url() {
        assert_eq!(
            super::with_db("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
    }
}

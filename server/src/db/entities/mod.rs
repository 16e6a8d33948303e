//! SeaORM entities mirroring the tables created by the `migrations` crate
//! (written in the shape `sea-orm-cli generate entity` produces).

pub mod instances;
pub mod patients;
pub mod series;
pub mod sessions;
pub mod studies;
pub mod users;

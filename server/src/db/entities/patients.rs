use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "patients")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The organisation whose studies name this patient (`0`: none; see
    /// migration `m20261207_000001_patients_per_org`). Unique key:
    /// `(org_id, patient_id, issuer)`.
    pub org_id: i64,
    pub patient_id: String,
    /// Issuer of Patient ID (0010,0021); "" when absent.
    pub issuer: String,
    pub name: String,
    pub birth_date: String,
    pub sex: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::studies::Entity")]
    Studies,
}

impl Related<super::studies::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Studies.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

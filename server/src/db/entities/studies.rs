use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "studies")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub study_uid: String,
    pub patient_id: i64,
    pub study_date: String,
    pub study_time: String,
    pub accession: String,
    pub description: String,
    pub modalities_in_study: String,
    pub num_series: i32,
    pub num_instances: i32,
    pub created_at: DateTimeUtc,
    /// The uploading organisation.
    pub org_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::patients::Entity",
        from = "Column::PatientId",
        to = "super::patients::Column::Id"
    )]
    Patients,
    #[sea_orm(has_many = "super::series::Entity")]
    Series,
}

impl Related<super::patients::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Patients.def()
    }
}

impl Related<super::series::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Series.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

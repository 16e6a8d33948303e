use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "series")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub series_uid: String,
    pub study_id: i64,
    pub modality: String,
    pub series_number: Option<i32>,
    pub description: String,
    pub body_part: String,
    pub num_instances: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::studies::Entity",
        from = "Column::StudyId",
        to = "super::studies::Column::Id"
    )]
    Studies,
    #[sea_orm(has_many = "super::instances::Entity")]
    Instances,
}

impl Related<super::studies::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Studies.def()
    }
}

impl Related<super::instances::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Instances.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

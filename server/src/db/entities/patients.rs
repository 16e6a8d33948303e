use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "patients")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub patient_id: String,
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

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "instances")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub sop_instance_uid: String,
    pub series_id: i64,
    pub sop_class_uid: String,
    pub instance_number: Option<i32>,
    pub transfer_syntax_uid: String,
    pub object_key: String,
    pub size: i64,
    pub sha256: String,
    pub rows: Option<i32>,
    pub columns: Option<i32>,
    pub number_of_frames: i32,
    /// DICOM JSON (PS3.18 F.2) of the de-identified dataset, without bulk data.
    #[sea_orm(column_type = "Text")]
    pub metadata: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::series::Entity",
        from = "Column::SeriesId",
        to = "super::series::Column::Id"
    )]
    Series,
}

impl Related<super::series::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Series.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

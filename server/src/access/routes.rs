//! The route table: every route the server answers, once, with its method,
//! path and what it requires. Route modules register their handlers on
//! these entries ([`RouteSpec::route`]); the access-matrix test
//! (`server/tests/it/access_matrix.rs`) walks the whole table, every route
//! × every kind of principal × own and foreign organisation.

use super::Action;
use actix_web::web;

/// What a route requires of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing (health, assets, sign-in forms, share link landing).
    Public,
    /// A signed-in user (worklist, QIDO listings, account pages);
    /// listings are filtered with `access::visible_studies`.
    Session,
    /// `StudyAccess<P>` on the `{study}` segment: this action on that study.
    Study(Action),
    /// A user with the role `admin` (`RequireRole<roles::Admin>`), on its
    /// own organisation's data only.
    Admin,
    /// A user with the role `auditor` (own organisation) or
    /// `platform_auditor` (`RequireRole<roles::AnyAuditor>`).
    Auditor,
    /// A gateway token (`GatewayUploader`), writing for its organisation.
    Gateway,
    /// A gateway token or an admin session (`GatewayOrAdmin`), writing for
    /// its organisation.
    GatewayOrAdmin,
}

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub need: Need,
}

impl RouteSpec {
    const fn new(method: &'static str, path: &'static str, need: Need) -> Self {
        Self { method, path, need }
    }

    /// An actix route for this entry's method (register it on
    /// [`RouteSpec::path`], see [`register`]).
    pub fn route(&self) -> actix_web::Route {
        match self.method {
            "POST" => web::post(),
            "PUT" => web::put(),
            "DELETE" => web::delete(),
            _ => web::get(),
        }
    }

    /// Whether a request from a principal is a write (changes state).
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

/// Register `handler` on the route table entry `spec`.
pub fn register<F, Args>(cfg: &mut web::ServiceConfig, spec: &RouteSpec, handler: F)
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    cfg.route(spec.path, spec.route().to(handler));
}

use Need::*;

macro_rules! spec {
    ($name:ident, $m:literal, $p:expr, $n:expr) => {
        pub const $name: RouteSpec = RouteSpec::new($m, $p, $n);
    };
}

// Platform (no principal needed).
spec!(HEALTHZ, "GET", "/healthz", Public);
spec!(STATIC, "GET", "/static/{name}", Public);
spec!(LOGIN_FORM, "GET", "/login", Public);
spec!(LOGIN, "POST", "/login", Public);
spec!(LOGIN_TOTP, "POST", "/login/totp", Public);
spec!(LOGIN_ENROL_FORM, "GET", "/login/totp/enrol", Public);
spec!(LOGIN_ENROL, "POST", "/login/totp/enrol", Public);
spec!(OIDC_LOGIN, "GET", "/auth/oidc/login", Public);
spec!(OIDC_CALLBACK, "GET", "/auth/oidc/callback", Public);
spec!(SHARE_LANDING, "GET", "/s/{token}", Public);
spec!(SHARE_PASSCODE, "POST", "/s/{token}", Public);
spec!(OHIF_ROOT, "GET", "/ohif", Public);
spec!(OHIF, "GET", "/ohif/{tail:.*}", Public);
// Signed-in users.
spec!(WORKLIST, "GET", "/", Session);
spec!(TOTP_FORM, "GET", "/account/totp", Session);
spec!(TOTP_ENROL, "POST", "/account/totp", Session);
spec!(LOGOUT, "POST", "/logout", Session);
spec!(LOGOUT_EVERYWHERE, "POST", "/logout/everywhere", Session);
// Gateway.
spec!(INGEST, "POST", mado_core::wire::INGEST_PATH, Gateway);
spec!(STOW, "POST", "/dicomweb/studies", GatewayOrAdmin);
// Organisation-scoped.
spec!(ADMIN_PAGE, "GET", "/admin", Admin);
spec!(ADMIN_USERS, "POST", "/admin/users", Admin);
spec!(ADMIN_GRANTS, "POST", "/admin/grants", Admin);
spec!(
    ADMIN_GRANT_REVOKE,
    "POST",
    "/admin/grants/{id}/revoke",
    Admin
);
spec!(AUDIT_PAGE, "GET", "/audit", Auditor);
spec!(QIDO_STUDIES, "GET", "/dicomweb/studies", Session);
spec!(QIDO_SERIES, "GET", "/dicomweb/series", Session);
// Study-scoped.
spec!(
    STUDY_PAGE,
    "GET",
    super::STUDY_PAGE,
    Study(Action::ViewMetadata)
);
spec!(
    RENDERED_PNG,
    "GET",
    super::RENDERED_PNG,
    Study(Action::ViewPixels)
);
spec!(SHARE_CREATE, "POST", super::SHARES, Study(Action::Share));
spec!(
    SHARE_REVOKE,
    "POST",
    super::SHARE_REVOKE,
    Study(Action::Share)
);

/// Every route, in the order they are registered.
pub static ROUTES: &[RouteSpec] = &[
    HEALTHZ,
    STATIC,
    LOGIN_FORM,
    LOGIN,
    LOGIN_TOTP,
    LOGIN_ENROL_FORM,
    LOGIN_ENROL,
    OIDC_LOGIN,
    OIDC_CALLBACK,
    SHARE_LANDING,
    SHARE_PASSCODE,
    OHIF_ROOT,
    OHIF,
    WORKLIST,
    TOTP_FORM,
    TOTP_ENROL,
    LOGOUT,
    LOGOUT_EVERYWHERE,
    INGEST,
    STOW,
    ADMIN_PAGE,
    ADMIN_USERS,
    ADMIN_GRANTS,
    ADMIN_GRANT_REVOKE,
    AUDIT_PAGE,
    QIDO_STUDIES,
    QIDO_SERIES,
    STUDY_PAGE,
    RENDERED_PNG,
    SHARE_CREATE,
    SHARE_REVOKE,
    RouteSpec::new("GET", "/dicomweb/studies/{study}/series", Study(Action::ViewMetadata)),
    RouteSpec::new("GET", "/dicomweb/studies/{study}/instances", Study(Action::ViewMetadata)),
    RouteSpec::new(
        "GET",
        "/dicomweb/studies/{study}/series/{series}/instances",
        Study(Action::ViewMetadata),
    ),
    RouteSpec::new("GET", "/dicomweb/studies/{study}", Study(Action::Download)),
    RouteSpec::new("GET", "/dicomweb/studies/{study}/metadata", Study(Action::ViewMetadata)),
    RouteSpec::new("GET", "/dicomweb/studies/{study}/series/{series}", Study(Action::Download)),
    RouteSpec::new(
        "GET",
        "/dicomweb/studies/{study}/series/{series}/metadata",
        Study(Action::ViewMetadata),
    ),
    RouteSpec::new("GET", "/dicomweb/studies/{study}/rendered", Study(Action::ViewPixels)),
    RouteSpec::new(
        "GET",
        "/dicomweb/studies/{study}/series/{series}/rendered",
        Study(Action::ViewPixels),
    ),
    RouteSpec::new("GET", "/dicomweb/studies/{study}/series/{series}/instances/{sop}", Study(Action::Download)),
    RouteSpec::new("GET", "/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata", Study(Action::ViewMetadata)),
    RouteSpec::new("GET", "/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frames}", Study(Action::Download)),
    RouteSpec::new("GET", "/dicomweb/studies/{study}/series/{series}/instances/{sop}/bulkdata/{tag}", Study(Action::Download)),
    RouteSpec::new("GET", "/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered", Study(Action::ViewPixels)),
    RouteSpec::new("GET", "/dicomweb/studies/{study}/series/{series}/instances/{sop}/thumbnail", Study(Action::ViewPixels)),
    RouteSpec::new(
        "GET",
        "/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/rendered",
        Study(Action::ViewPixels),
    ),
    RouteSpec::new(
        "GET",
        "/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/thumbnail",
        Study(Action::ViewPixels),
    ),
    RouteSpec::new(
        "GET",
        "/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/tiles.json",
        Study(Action::ViewPixels),
    ),
    RouteSpec::new(
        "GET",
        "/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/tiles/{level}/{tile}",
        Study(Action::ViewPixels),
    ),
];

/// Every route.
pub fn routes() -> &'static [RouteSpec] {
    ROUTES
}

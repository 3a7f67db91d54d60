//! Report dispatch: enrich a bag with identity, select and match rules, build instances, call handlers.

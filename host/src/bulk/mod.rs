//! Bulk queries: a cohort of patients in, one QBP^Q11 per patient through
//! the routes (throttled per IIS by [`gate`]), FHIR R4 NDJSON out.

pub mod gate;

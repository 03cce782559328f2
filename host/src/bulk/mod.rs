//! Bulk queries: a patient cohort in, one QBP^Q11 per patient out, each
//! RSP^K11 answer turned into FHIR R4 resources, and the IIS's history
//! reconciled with what an EHR holds. This module is the pure conversion
//! layer: files and strings in, values out, no I/O beyond reading a cohort.

pub mod cohort;
pub mod fhir;
pub mod qbp;
pub mod reconcile;
pub mod rsp;

//! `OperationOutcome`: the one shape in which every error reaches a FHIR client.

use serde_json::{json, Value};

/// `OperationOutcome.issue.severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn code(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// One `OperationOutcome.issue`. `code` is from the required IssueType value set
/// (`invalid`, `structure`, `required`, `value`, `not-found`, `deleted`, `conflict`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: &'static str,
    pub diagnostics: String,
    /// FHIRPath locations the issue is about.
    pub expression: Vec<String>,
}

impl Issue {
    pub fn error(code: &'static str, diagnostics: impl Into<String>) -> Self {
        Self { severity: Severity::Error, code, diagnostics: diagnostics.into(), expression: Vec::new() }
    }

    pub fn information(code: &'static str, diagnostics: impl Into<String>) -> Self {
        Self { severity: Severity::Information, code, diagnostics: diagnostics.into(), expression: Vec::new() }
    }

    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression.push(expression.into());
        self
    }
}

/// Builds an `OperationOutcome` resource from issues (at least one is always present).
pub fn operation_outcome(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = if issues.is_empty() {
        vec![json!({"severity": "information", "code": "informational", "diagnostics": "ok"})]
    } else {
        issues
            .iter()
            .map(|issue| {
                let mut value = json!({
                    "severity": issue.severity.code(),
                    "code": issue.code,
                    "diagnostics": issue.diagnostics,
                });
                if !issue.expression.is_empty() {
                    value["expression"] = json!(issue.expression);
                }
                value
            })
            .collect()
    };
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_carries_code_path_and_message() {
        let outcome = operation_outcome(&[Issue::error("required", "Patient.gender is missing").at("Patient.gender")]);
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["severity"], "error");
        assert_eq!(outcome["issue"][0]["code"], "required");
        assert_eq!(outcome["issue"][0]["expression"][0], "Patient.gender");
        assert_eq!(operation_outcome(&[])["issue"][0]["code"], "informational");
    }
}

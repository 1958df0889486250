//! Multi-document YAML → JSON documents, and the error type that locates a problem in them.

use plinth_types::api::SourcedDocument;
use serde::Deserialize;

/// A problem with one document: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct DocumentError {
    /// The file, or `request` when the document came in a request body.
    pub file: String,
    /// 1-based document index within the file, when known.
    pub index: Option<usize>,
    /// `Kind/name` when known, to help find the document.
    pub object: Option<String>,
    /// Dotted field path (`spec.quotas[0].gpus`), empty for the whole document.
    pub path: String,
    pub message: String,
}

impl DocumentError {
    fn render(&self) -> String {
        let mut s = self.file.clone();
        if let Some(i) = self.index {
            s.push_str(&format!(": document {i}"));
        }
        if let Some(o) = &self.object {
            s.push_str(&format!(" ({o})"));
        }
        if !self.path.is_empty() {
            s.push_str(&format!(": {}", self.path));
        }
        s.push_str(&format!(": {}", self.message));
        s
    }
}

/// Splits `text` into its YAML documents (skipping empty ones) and converts each to JSON.
/// Every syntax error is reported with the file name and the document's position.
pub fn parse_yaml_documents(text: &str, file: &str) -> Result<Vec<SourcedDocument>, DocumentError> {
    let mut out = Vec::new();
    for (i, de) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value = serde_json::Value::deserialize(de).map_err(|e| DocumentError {
            file: file.to_string(),
            index: Some(index),
            object: None,
            path: String::new(),
            message: format!("invalid YAML: {e}"),
        })?;
        if value.is_null() {
            continue;
        }
        out.push(SourcedDocument {
            file: Some(file.to_string()),
            index: Some(index),
            document: value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_skips_empty_ones() {
        let docs = parse_yaml_documents("a: 1\n---\n---\nb: [2]\n", "f.yaml").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].index, Some(1));
        assert_eq!(docs[1].index, Some(3));
        assert_eq!(docs[1].document["b"][0], 2);
    }

    #[test]
    fn syntax_error_names_file_and_document() {
        let err = parse_yaml_documents("a: 1\n---\nb: [2\n", "bad.yaml").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("bad.yaml: document 2: invalid YAML"),
            "{text}"
        );
    }
}

//! The text of every loaded file, kept so that diagnostics can quote the offending line.

use std::sync::Arc;

/// Index of a file in a [`Sources`] set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId(pub(crate) u32);

/// One loaded file: the name diagnostics print and its text.
#[derive(Debug)]
pub struct SourceFile {
    /// The name diagnostics print (a path, `kubernetes:NS/KIND/NAME`, ...).
    pub name: Arc<str>,
    /// The whole text.
    pub text: String,
    /// Byte offset where each line starts; line 1 is `line_starts[0]`.
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// A file called `name` holding `text`.
    pub fn new(name: &str, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            name: Arc::from(name),
            text,
            line_starts,
        }
    }

    /// The text of 1-based lines `from` up to (not including) `to`, line endings included.
    pub fn lines_text(&self, from: u32, to: u32) -> &str {
        let at = |line: u32| {
            self.line_starts
                .get((line as usize).wrapping_sub(1))
                .copied()
                .unwrap_or(self.text.len())
        };
        let start = at(from.max(1));
        let end = at(to).max(start);
        self.text.get(start..end).unwrap_or("")
    }

    /// The text of 1-based `line`, without its line ending; empty past the end.
    pub fn line(&self, line: u32) -> &str {
        let Some(&start) = self.line_starts.get((line as usize).wrapping_sub(1)) else {
            return "";
        };
        let end = self
            .line_starts
            .get(line as usize)
            .map_or(self.text.len(), |&next| next - 1);
        self.text
            .get(start..end)
            .unwrap_or("")
            .trim_end_matches('\r')
    }
}

/// Every file of one load, in load order.
#[derive(Debug, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

impl Sources {
    /// Adds a file; its id is its position.
    pub fn add(&mut self, file: SourceFile) -> FileId {
        self.files.push(file);
        FileId(u32::try_from(self.files.len() - 1).unwrap_or(u32::MAX))
    }

    /// The load-order position of the file called `name` (after all files when unknown).
    pub fn position(&self, name: &str) -> usize {
        self.files
            .iter()
            .position(|f| &*f.name == name)
            .unwrap_or(self.files.len())
    }

    /// The file `id` (of this set).
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// The file whose name is this very allocation: a diagnostic's `file` is a clone of its
    /// source's name, so two files of the same name (a file and the previous version of it
    /// kept in force) are still told apart.
    pub fn by_name_ptr(&self, name: &Arc<str>) -> Option<FileId> {
        let i = self.files.iter().position(|f| Arc::ptr_eq(&f.name, name))?;
        Some(FileId(u32::try_from(i).ok()?))
    }
}

/// Where a node or token starts, and how many characters a caret should underline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The file.
    pub file: FileId,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
    /// Characters to underline (at least 1 when rendered).
    pub width: u32,
}

impl Span {
    /// The same start, underlining `width` characters.
    pub fn with_width(self, width: u32) -> Self {
        Self { width, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let f = SourceFile::new("a", "one\r\ntwo\n\nfour".into());
        assert_eq!(f.line(1), "one");
        assert_eq!(f.line(2), "two");
        assert_eq!(f.line(3), "");
        assert_eq!(f.line(4), "four");
        assert_eq!(f.line(5), "");
        assert_eq!(f.line(0), "");
    }
}

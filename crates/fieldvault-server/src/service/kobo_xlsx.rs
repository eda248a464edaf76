//! The XLSX side of exports: `rust_xlsxwriter` in constant-memory mode on its own thread, one
//! sheet for the submissions and one per repeat group.
//!
//! Rows cross a bounded channel to a writer thread that appends them to the worksheet; the
//! library keeps each finished row in a temporary file rather than in memory, and at the end the
//! workbook is zipped into one more temporary file, which the caller streams into the encrypted
//! blob store. Those temporary files are plaintext: they live in a private directory (mode 0700)
//! under the data directory and are deleted as soon as the file is stored (docs/kobo-api.md).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use rust_xlsxwriter::Workbook;

use super::ServiceError;

/// Rows waiting for the writer thread.
const QUEUE: usize = 1024;
/// Excel's row limit (header included).
pub const MAX_ROWS: u32 = 1_048_576;
/// Excel's column limit.
pub const MAX_COLUMNS: usize = 16_384;

/// A workbook being written; see the module docs.
pub struct XlsxSink {
    tx: Option<SyncSender<(usize, Vec<String>)>>,
    worker: Option<JoinHandle<Result<(), String>>>,
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl XlsxSink {
    /// Starts a workbook of one sheet per `(name, header)`, each header as its first row,
    /// staging files under `tmp_root`.
    pub fn new(sheets: &[(String, Vec<String>)], tmp_root: &Path) -> Result<Self, ServiceError> {
        if sheets.iter().any(|(_, h)| h.len() > MAX_COLUMNS) {
            return Err(ServiceError::Invalid {
                code: "export.too_wide",
                message: format!("An XLSX sheet holds at most {MAX_COLUMNS} columns."),
            });
        }
        std::fs::create_dir_all(tmp_root).map_err(io)?;
        restrict(tmp_root)?;
        let dir = tempfile::Builder::new()
            .prefix("export-")
            .tempdir_in(tmp_root)
            .map_err(io)?;
        restrict(dir.path())?;
        let path = dir.path().join("export.xlsx");
        let (tx, rx) = sync_channel::<(usize, Vec<String>)>(QUEUE);
        let (stage, out) = (dir.path().to_path_buf(), path.clone());
        let sheets = sheets.to_vec();
        let worker = std::thread::Builder::new()
            .name("xlsx-export".into())
            .spawn(move || -> Result<(), String> {
                let e = |e: rust_xlsxwriter::XlsxError| e.to_string();
                let mut wb = Workbook::new();
                wb.set_tempdir(&stage).map_err(e)?;
                let mut next_row = Vec::with_capacity(sheets.len());
                for (name, _) in &sheets {
                    let ws = wb.add_worksheet_with_constant_memory().map_err(e)?;
                    ws.set_name(name).map_err(e)?;
                    next_row.push(0u32);
                }
                let headers = sheets.into_iter().enumerate().map(|(i, (_, h))| (i, h));
                for (sheet, row) in headers.chain(rx) {
                    let r = next_row
                        .get_mut(sheet)
                        .ok_or_else(|| format!("no sheet {sheet}"))?;
                    if *r >= MAX_ROWS {
                        return Err(format!("an XLSX sheet holds at most {MAX_ROWS} rows"));
                    }
                    let ws = wb.worksheet_from_index(sheet).map_err(e)?;
                    for (c, cell) in row.iter().enumerate() {
                        if !cell.is_empty() {
                            let c = u16::try_from(c).map_err(|_| "too many columns".to_owned())?;
                            ws.write_string(*r, c, cell).map_err(e)?;
                        }
                    }
                    *r += 1;
                }
                wb.save(&out).map_err(e)
            })
            .map_err(io)?;
        Ok(Self {
            tx: Some(tx),
            worker: Some(worker),
            dir,
            path,
        })
    }

    /// Appends a row to sheet `sheet` (blocks briefly when the writer is behind).
    pub fn write(&mut self, sheet: usize, cells: Vec<String>) -> Result<(), ServiceError> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io("workbook already finished"))?;
        if tx.send((sheet, cells)).is_err() {
            // The writer stopped: its error is reported by `finish`.
            return self.join().and(Err(io("the XLSX writer stopped")));
        }
        Ok(())
    }

    fn join(&mut self) -> Result<(), ServiceError> {
        self.tx = None;
        match self.worker.take() {
            Some(w) => match w.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(m)) => Err(ServiceError::Invalid {
                    code: "export.xlsx",
                    message: m,
                }),
                Err(_) => Err(io("the XLSX writer panicked")),
            },
            None => Ok(()),
        }
    }

    /// Closes the workbook; returns its staging directory (deleted on drop) and file.
    pub fn finish(mut self) -> Result<(tempfile::TempDir, PathBuf), ServiceError> {
        self.join()?;
        Ok((self.dir, self.path))
    }
}

fn io(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("writing XLSX export: {e}"))
}

#[cfg(unix)]
fn restrict(p: &Path) -> Result<(), ServiceError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

#[cfg(not(unix))]
fn restrict(_: &Path) -> Result<(), ServiceError> {
    Ok(())
}

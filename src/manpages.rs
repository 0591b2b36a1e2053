//! Man pages and shell completions generated from a clap command, for packaging.

use std::io;
use std::path::{Path, PathBuf};

/// Writes `<name>.1` for `cmd` and `<name>-<sub>.1` for each of its visible subcommands into
/// `dir` (created if missing); returns the files written.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_string();
    let mut written = Vec::new();
    let mut page = |cmd: clap::Command, file: String| -> io::Result<()> {
        let path = dir.join(file);
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        std::fs::write(&path, buf)?;
        written.push(path);
        Ok(())
    };
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let full = format!("{name}-{}", sub.get_name());
        page(
            sub.clone()
                .name(full.clone())
                .bin_name(full.replace('-', " ")),
            format!("{full}.1"),
        )?;
    }
    page(cmd, format!("{name}.1"))?;
    Ok(written)
}

/// Writes the completion script of `cmd` for `shell` to `out`.
pub fn write_completions(
    cmd: &mut clap::Command,
    shell: clap_complete::Shell,
    out: &mut dyn io::Write,
) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, cmd, name, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_visible_subcommand_plus_the_command() {
        let cmd = clap::Command::new("tool")
            .about("A tool")
            .subcommand(clap::Command::new("run").about("Run it"))
            .subcommand(clap::Command::new("secret").hide(true));
        let dir = tempfile::tempdir().unwrap();
        let files = write_man_pages(cmd, dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["tool-run.1", "tool.1"]);
        let page = std::fs::read_to_string(&files[0]).unwrap();
        assert!(
            page.contains(".TH tool-run 1") && page.contains("Run it"),
            "{page}"
        );
    }

    #[test]
    fn completions_name_the_subcommands() {
        let mut cmd = clap::Command::new("tool").subcommand(clap::Command::new("run"));
        let mut out = Vec::new();
        write_completions(&mut cmd, clap_complete::Shell::Bash, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("tool") && text.contains("run"));
    }
}

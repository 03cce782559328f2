//! `izhub plugin …`: the plugin author's tools.

use std::process::ExitCode;

use super::args::PluginCommand;

pub(super) async fn plugin_command(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    use crate::tools::plugin_dev::{self, TestSetup};
    use crate::tools::plugin_kit;
    match cmd {
        PluginCommand::New {
            name,
            dir,
            lang,
            sdk,
        } => new_plugin(&name, &dir, lang, sdk.as_deref()),
        PluginCommand::Build { dir } => {
            let (wasm, manifest) = plugin_kit::build_plugin(&dir)?;
            eprintln!(
                "built {} (WIT {}); sign it with `izhub plugin sign --key KEY {}`",
                manifest.label(),
                manifest.wit,
                wasm.display()
            );
            println!("{}", wasm.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Inspect { wasm, json } => {
            let found = plugin_kit::inspect(&wasm)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else {
                print!("{found}");
            }
            Ok(if found.refused() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        PluginCommand::Keygen { out } => {
            let (key, public, pk) = plugin_kit::keygen(&out)?;
            println!("secret key: {} (keep it private)", key.display());
            println!("public key: {} ({pk})", public.display());
            println!("trust it with: trusted_publishers = [\"{pk}\"]");
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Sign { key, wasm, out } => {
            let (signed, pk) = plugin_kit::sign(&key, &wasm, out.as_deref())?;
            println!("signed {} by {pk}", signed.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Test {
            wasm,
            messages,
            config,
            tables,
            grants,
            codesets,
            expect,
            bless,
        } => {
            let setup = TestSetup {
                config,
                tables,
                grants,
                codesets,
            };
            let mismatches =
                plugin_dev::test_plugin(&wasm, &messages, &setup, expect.as_deref(), bless).await?;
            Ok(if mismatches == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PluginCommand::Bench {
            wasm,
            message,
            iterations,
            config,
            grants,
            codesets,
            perf_map,
        } => {
            let setup = TestSetup {
                config,
                tables: Vec::new(),
                grants,
                codesets,
            };
            plugin_dev::bench_plugin(&wasm, &message, &setup, iterations.max(1), perf_map).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `izhub plugin new`: a plugin project from the kit, and what to run next.
fn new_plugin(
    name: &str,
    dir: &std::path::Path,
    lang: crate::tools::plugin_kit::Lang,
    sdk: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    use crate::tools::plugin_kit::{self, Lang};
    let created = plugin_kit::new_plugin(name, dir, lang, sdk)?;
    println!("created {}", created.display());
    let first = match lang {
        Lang::Rust => "cargo test && ",
        Lang::Js | Lang::Python => "",
    };
    println!(
        "next: cd {} && {first}izhub plugin build",
        created.display()
    );
    Ok(ExitCode::SUCCESS)
}

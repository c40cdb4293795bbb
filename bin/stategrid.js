#!/usr/bin/env node
// Thin launcher: the CLI is compiled to dist/ by `npm run build` (run automatically by `npm ci` via prepare).
'use strict';
require('../dist/src/cli/index.js')
  .main(process.argv)
  .then(() => process.exit(process.exitCode ?? 0));

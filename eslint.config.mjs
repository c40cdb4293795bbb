// Flat config: typed linting for floating promises; workflow files may import only the workflow SDK and types.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const SQL_START =
  '^\\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|TRUNCATE|COPY|BEGIN|COMMIT|ROLLBACK|SET|LOCK)(\\s|$)';
const SQL_OUTSIDE_SQL_MODULES = [
  {
    selector: `Literal[value=/${SQL_START}/]`,
    message: 'SQL text belongs in a SQL module (src/sink, src/cdc/source-admin.ts).',
  },
  {
    selector: `TemplateElement[value.raw=/${SQL_START}/]`,
    message: 'SQL text belongs in a SQL module (src/sink, src/cdc/source-admin.ts).',
  },
];

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      '.stategrid*/**',
      'bin/**',
      'test-output/**',
      'eslint.config.mjs',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // Short functions, and SQL text only in the SQL modules: the sink layers, the source admin module, cluster
    // admin and transactions (src/db) and the test-data generator (statements elsewhere are built from those modules' exports).
    files: ['src/**/*.ts'],
    ignores: ['src/sink/**', 'src/cdc/source-admin.ts', 'src/db/**', 'src/data/generate.ts'],
    rules: {
      'max-lines-per-function': ['error', { max: 120 }],
      'no-restricted-syntax': ['error', ...SQL_OUTSIDE_SQL_MODULES],
    },
  },
  {
    files: ['src/sink/**', 'src/cdc/source-admin.ts', 'src/db/**', 'src/data/generate.ts'],
    rules: { 'max-lines-per-function': ['error', { max: 120 }] },
  },
  {
    files: ['src/workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(?!@temporalio/workflow$|@temporalio/common$|\\.\\.?/).*',
              message:
                'Workflow code is deterministic: import only @temporalio/workflow, types and sibling workflow modules.',
            },
          ],
          paths: [
            { name: 'pg', message: 'No I/O in workflows: call an activity.' },
            { name: 'fs', message: 'No I/O in workflows: call an activity.' },
          ],
        },
      ],
    },
  },
);

// Flat config: typed linting for floating promises; workflow files may import only the workflow SDK and types.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

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

import tseslint from 'typescript-eslint'

export default tseslint.config(
  {
    ignores: [
      'node_modules/**',
      '.wrangler/**',
      'migrations/**',
      'bench/peers/**',
      'bench/results/**',
      'test-artifacts/**',
      '.nexus/**',
    ],
  },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' },
      ],
    },
  },
  {
    // Rules modules replay from their log: no clock, no randomness but the seeded rng, no I/O
    // (docs/rules.md, "Deterministic"). A lint error here, not a session that fails its wake.
    files: ['workers/core/rules/**/*.ts', 'examples/rules/**/*.ts'],
    rules: {
      'no-restricted-globals': [
        'error',
        ...['Date', 'performance', 'crypto', 'fetch', 'setTimeout', 'setInterval'].map((name) => ({
          name,
          message: 'Rules are replayed from their log: use ctx.tick for time, ctx.rng for chance.',
        })),
      ],
      'no-restricted-properties': [
        'error',
        {
          object: 'Math',
          property: 'random',
          message: 'Use ctx.rng: replay draws the same numbers.',
        },
      ],
    },
  },
)

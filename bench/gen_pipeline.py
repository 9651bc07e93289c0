#!/usr/bin/env python3
"""Writes a large .gitlab-ci.yml for benchmarks: extends chains, !reference, needs,
parallel:matrix and rules. Usage: gen_pipeline.py [JOBS] > .gitlab-ci.yml

JOBS counts the jobs GitLab would create (matrix instances included)."""
import sys

total = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
stages = [f"stage{i}" for i in range(10)]
out = []
w = out.append
w("stages:")
for s in stages:
    w(f"  - {s}")
w("variables:\n  GLOBAL: g\n  DEPLOY_ENV: staging")
w(".snippets:\n  setup:\n    - echo setting up\n    - export PATH=$PATH:/opt/bin\n  cleanup:\n    - echo done")
w(".base0:\n  image: alpine:3.20\n  variables:\n    LEVEL0: '0'\n  before_script:\n    - !reference [.snippets, setup]\n  retry: 1")
for k in range(1, 6):
    w(f".base{k}:\n  extends: .base{k-1}\n  variables:\n    LEVEL{k}: '{k}'\n  tags: [t{k}]")
matrix_jobs = total // 20 // 4          # 5% of the jobs come from 4-way matrices
plain = total - matrix_jobs * 4
for i in range(plain):
    st = i % 10
    w(f"job-{i}:")
    w(f"  extends: .base{i % 6}")
    w(f"  stage: {stages[st]}")
    w("  script:")
    w("    - !reference [.snippets, setup]")
    w(f"    - echo job {i} in $CI_JOB_STAGE")
    w("  after_script:\n    - !reference [.snippets, cleanup]")
    if i >= 10 and i % 3 == 0:
        w(f"  needs: [job-{i - 10}]")
    if i % 4 == 0:
        w("  rules:")
        w("    - if: '$CI_COMMIT_BRANCH == \"main\" && $DEPLOY_ENV =~ /^stag/'")
        w("      when: always")
        w("    - if: $CI_PIPELINE_SOURCE == \"merge_request_event\"")
        w("      when: manual")
        w("    - when: on_success")
    if i % 7 == 0:
        w("  cache:\n    key: $CI_COMMIT_REF_SLUG\n    paths: [.m2/repository]")
        w("  artifacts:\n    paths: [target/]\n    expire_in: 1 week")
for m in range(matrix_jobs):
    w(f"matrix-{m}:")
    w("  extends: .base2")
    w(f"  stage: {stages[m % 10]}")
    w("  script: [echo $PROVIDER $REGION]")
    w("  parallel:\n    matrix:\n      - PROVIDER: [aws, gcp]\n        REGION: [eu, us]")
print("\n".join(out))

#!/usr/bin/env node
// The CDK app: one KvsStream stack. Options come from context (`cdk deploy -c key=value`), see
// docs/deploy.md; without any it synthesizes offline, account- and region-agnostic.
import * as cdk from 'aws-cdk-lib';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { KvsStreamStack } from '../lib/kvs-stream-stack';

const app = new cdk.App();
const ctx = (key: string): string | undefined => app.node.tryGetContext(key);
const num = (key: string): number | undefined => {
  const value = ctx(key);
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new Error(`context ${key}=${value} is not a number`);
  return n;
};
const imageUri = ctx('imageUri');

new KvsStreamStack(app, ctx('stackName') ?? 'KvsStream', {
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
  image: imageUri ? ecs.ContainerImage.fromRegistry(imageUri) : undefined,
  streamPrefix: ctx('streamPrefix'),
  streamTemplate: ctx('streamTemplate'),
  retentionHours: num('retentionHours'),
  concurrency: num('concurrency'),
  maxTasks: num('maxTasks'),
  cpu: num('cpu'),
  memoryMiB: num('memoryMiB'),
  putMediaRoleArn: ctx('putMediaRoleArn'),
  alarmEmail: ctx('alarmEmail'),
});

import * as cdk from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as fs from 'fs';
import * as path from 'path';
import { KvsStreamStack, KvsStreamStackProps } from '../lib/kvs-stream-stack';

// The same feature flags as `cdk synth` (cdk.json), so the tests see the deployed template.
const context = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8')).context;

function synth(props: Partial<KvsStreamStackProps> = {}): Template {
  const app = new cdk.App({ context });
  const stack = new KvsStreamStack(app, 'Test', {
    env: { account: '111122223333', region: 'eu-west-1' },
    // A registry image keeps the tests from staging the repository as a Docker asset.
    image: ecs.ContainerImage.fromRegistry('example.invalid/s3-to-kvs:test'),
    ...props,
  });
  return Template.fromStack(stack);
}

type Statement = { Effect: string; Action: string | string[]; Resource: unknown; Principal?: unknown; Condition?: unknown; Sid?: string };

function statementsOf(template: Template, type: string): Statement[] {
  return Object.values(template.findResources(type)).flatMap(
    (r) => ((r.Properties.PolicyDocument ?? r.Properties.KeyPolicy)?.Statement ?? []) as Statement[],
  );
}

function taskRoleStatements(template: Template): Statement[] {
  const roles = template.findResources('AWS::IAM::Role', {
    Properties: { Description: Match.stringLikeRegexp('kvs-stream worker') },
  });
  const [roleId] = Object.keys(roles);
  expect(roleId).toBeDefined();
  return Object.values(template.findResources('AWS::IAM::Policy'))
    .filter((p) => JSON.stringify(p.Properties.Roles).includes(roleId))
    .flatMap((p) => p.Properties.PolicyDocument.Statement as Statement[]);
}

const actions = (s: Statement): string[] => (Array.isArray(s.Action) ? s.Action : [s.Action]);

describe('KvsStreamStack', () => {
  const template = synth();

  test('KVS permissions are exactly the worker calls, on streams under the prefix only', () => {
    const kvs = taskRoleStatements(template).filter((s) => actions(s).some((a) => a.startsWith('kinesisvideo:')));
    expect(kvs).toHaveLength(1);
    expect(actions(kvs[0]).sort()).toEqual([
      'kinesisvideo:CreateStream',
      'kinesisvideo:DescribeStream',
      'kinesisvideo:GetDataEndpoint',
      'kinesisvideo:GetMediaForFragmentList',
      'kinesisvideo:ListFragments',
      'kinesisvideo:PutMedia',
    ]);
    expect(JSON.stringify(kvs[0].Resource)).toContain(':kinesisvideo:eu-west-1:111122223333:stream/kvs-stream-*/*');
  });

  test('the task role has no wildcard action or resource and no cloudwatch:PutMetricData', () => {
    const statements = taskRoleStatements(template);
    expect(statements.length).toBeGreaterThan(0);
    for (const s of statements) {
      expect(s.Effect).toBe('Allow');
      for (const a of actions(s)) {
        expect(a).not.toContain('*');
        expect(a).not.toBe('cloudwatch:PutMetricData');
      }
      expect(s.Resource).not.toEqual('*');
    }
    const all = statements.flatMap(actions);
    expect(all).toEqual(expect.arrayContaining(['s3:GetObject', 'sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:ChangeMessageVisibility', 'sqs:SendMessage']));
    expect(all).not.toContain('sts:AssumeRole');
    // Sending is allowed to the work queue and the two DLQs (dead-letter at once), not the intake.
    const sendTargets = statements.filter((s) => actions(s).includes('sqs:SendMessage')).map((s) => JSON.stringify(s.Resource));
    const sent = sendTargets.join(' ');
    expect(sent).toMatch(/WorkQueue/);
    expect(sent).toMatch(/IntakeDlq/);
    expect(sent).toMatch(/WorkDlq/);
    expect(sent).not.toMatch(/IntakeQueue/);
    // s3:ListBucket on the bucket itself only (a missing key is then 404, not 403).
    const list = statements.filter((s) => actions(s).includes('s3:ListBucket'));
    expect(list).toHaveLength(1);
    expect(JSON.stringify(list[0].Resource)).not.toContain('/*');
    expect(all).not.toContain('s3:PutObject');
  });

  test('no role is assumable by an account principal; the task role only by ECS tasks of this account', () => {
    for (const role of Object.values(template.findResources('AWS::IAM::Role'))) {
      for (const s of role.Properties.AssumeRolePolicyDocument.Statement as Statement[]) {
        expect(JSON.stringify(s.Principal)).not.toMatch(/AWS|:root/);
      }
    }
    template.hasResourceProperties('AWS::IAM::Role', {
      Description: Match.stringLikeRegexp('kvs-stream worker'),
      AssumeRolePolicyDocument: {
        Statement: [Match.objectLike({
          Principal: { Service: 'ecs-tasks.amazonaws.com' },
          Condition: { StringEquals: { 'aws:SourceAccount': '111122223333' }, ArnLike: Match.anyValue() },
        })],
      },
    });
  });

  test('a configured PutMedia role is the only role the task may assume', () => {
    const arn = 'arn:aws:iam::111122223333:role/put-media';
    const t = synth({ putMediaRoleArn: arn });
    const assume = taskRoleStatements(t).filter((s) => actions(s).includes('sts:AssumeRole'));
    expect(assume).toEqual([expect.objectContaining({ Resource: arn })]);
    t.hasResourceProperties('AWS::ECS::TaskDefinition', {
      ContainerDefinitions: [Match.objectLike({ Environment: Match.arrayWith([{ Name: 'ECS_ROLE', Value: arn }]) })],
    });
  });

  test('the upload bucket is KMS-encrypted, private, TLS-only and notifies the intake queue', () => {
    template.hasResourceProperties('AWS::S3::Bucket', {
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms', KMSMasterKeyID: Match.anyValue() }, BucketKeyEnabled: true }],
      },
      PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
      NotificationConfiguration: {
        QueueConfigurations: [{ Event: 's3:ObjectCreated:*', Queue: { 'Fn::GetAtt': [Match.stringLikeRegexp('^IntakeQueue'), 'Arn'] } }],
      },
    });
    const denies = statementsOf(template, 'AWS::S3::BucketPolicy').filter((s) => s.Effect === 'Deny');
    expect(denies.some((s) => JSON.stringify(s.Condition) === JSON.stringify({ Bool: { 'aws:SecureTransport': 'false' } }))).toBe(true);
    for (const bucket of Object.values(template.findResources('AWS::S3::Bucket'))) {
      expect(bucket.Properties.BucketEncryption).toBeDefined();
      expect(bucket.Properties.PublicAccessBlockConfiguration.BlockPublicPolicy).toBe(true);
    }
  });

  test('the bucket is created after the queue policy that lets S3 notify the queue', () => {
    // S3 validates the destination when the notification configuration is set.
    const buckets = template.findResources('AWS::S3::Bucket', { Properties: { NotificationConfiguration: Match.anyValue() } });
    const [bucket] = Object.values(buckets);
    const [policyId] = Object.entries(template.findResources('AWS::SQS::QueuePolicy'))
      .filter(([, p]) => JSON.stringify(p.Properties.Queues).includes('IntakeQueue'))
      .map(([id]) => id);
    expect(bucket.DependsOn).toEqual(expect.arrayContaining([policyId]));
    // The policy names the bucket by the same computed name, not by a reference (no cycle).
    expect(JSON.stringify(bucket.Properties.BucketName)).toContain('kvs-stream-uploads');
  });

  test('each queue has exactly one resource policy, and it denies insecure transport', () => {
    // Two AWS::SQS::QueuePolicy resources on one queue overwrite each other.
    const policies = Object.values(template.findResources('AWS::SQS::QueuePolicy'));
    const queues = policies.flatMap((p) => p.Properties.Queues.map((q: unknown) => JSON.stringify(q)));
    expect(new Set(queues).size).toBe(queues.length);
    expect(queues).toHaveLength(4);
    for (const p of policies) {
      expect(p.Properties.PolicyDocument.Statement).toEqual(expect.arrayContaining([
        expect.objectContaining({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
      ]));
    }
  });

  test('only S3, from this bucket and account, may send to the intake queue', () => {
    const allows = statementsOf(template, 'AWS::SQS::QueuePolicy').filter((s) => s.Effect === 'Allow');
    expect(allows).toHaveLength(1);
    expect(allows[0].Principal).toEqual({ Service: 's3.amazonaws.com' });
    expect(actions(allows[0])).toEqual(['sqs:SendMessage']);
    expect(JSON.stringify(allows[0].Condition)).toContain('aws:SourceArn');
    expect(JSON.stringify(allows[0].Condition)).toContain('111122223333');
  });

  test('queues: encrypted, FIFO work queue and FIFO DLQ, both redrive to their DLQ', () => {
    const queues = template.findResources('AWS::SQS::Queue');
    expect(Object.keys(queues)).toHaveLength(4);
    for (const q of Object.values(queues)) {
      expect(q.Properties.SqsManagedSseEnabled).toBe(true);
    }
    template.hasResourceProperties('AWS::SQS::Queue', {
      FifoQueue: true,
      ContentBasedDeduplication: false,
      DeduplicationScope: 'messageGroup',
      FifoThroughputLimit: 'perMessageGroupId',
      RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^WorkDlq'), 'Arn'] }, maxReceiveCount: 5 },
    });
    template.hasResourceProperties('AWS::SQS::Queue', {
      FifoQueue: Match.absent(),
      RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^IntakeDlq'), 'Arn'] }, maxReceiveCount: 5 },
    });
    const fifoDlq = Object.entries(queues).find(([id]) => id.startsWith('WorkDlq'));
    expect(fifoDlq?.[1].Properties.FifoQueue).toBe(true);
  });

  test('the service runs the worker, non-root, read-only, with the health check and the pinned environment', () => {
    template.hasResourceProperties('AWS::ECS::TaskDefinition', {
      RequiresCompatibilities: ['FARGATE'],
      ContainerDefinitions: [Match.objectLike({
        Command: ['worker'],
        User: '10001:10001',
        ReadonlyRootFilesystem: true,
        StopTimeout: 120,
        LinuxParameters: { InitProcessEnabled: true },
        HealthCheck: Match.objectLike({ Command: ['CMD', '/usr/local/bin/s3-to-kvs', 'healthcheck'] }),
        Environment: Match.arrayWith([
          { Name: 'QUEUE_URL', Value: { Ref: Match.stringLikeRegexp('^WorkQueue') } },
          { Name: 'INTAKE_QUEUE_URL', Value: { Ref: Match.stringLikeRegexp('^IntakeQueue') } },
          { Name: 'STREAM_TEMPLATE', Value: 'kvs-stream-{key_dir}' },
          { Name: 'CREATE_STREAMS', Value: 'true' },
          { Name: 'DRAIN_SECONDS', Value: '105' },
          { Name: 'LOG_FORMAT', Value: 'json' },
        ]),
      })],
    });
    template.hasResourceProperties('AWS::ECS::Service', { DesiredCount: 0, LaunchType: 'FARGATE' });
  });

  test('logs are retained for a bounded time and encrypted', () => {
    const groups = Object.values(template.findResources('AWS::Logs::LogGroup'));
    expect(groups.length).toBeGreaterThanOrEqual(2);
    for (const g of groups) {
      expect(g.Properties.RetentionInDays).toBe(30);
      expect(g.Properties.KmsKeyId).toBeDefined();
    }
  });

  test('scales on the backlog of both queues, from zero to maxTasks, one task per CONCURRENCY objects', () => {
    const t = synth({ concurrency: 3, maxTasks: 3 });
    t.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', { MinCapacity: 0, MaxCapacity: 3 });
    const policies = Object.values(t.findResources('AWS::ApplicationAutoScaling::ScalingPolicy'))
      .map((p) => p.Properties.StepScalingPolicyConfiguration);
    expect(policies).toHaveLength(2);
    for (const p of policies) {
      expect(p.AdjustmentType).toBe('ExactCapacity');
    }
    const adjustments = policies.flatMap((p) => p.StepAdjustments).map((s: { ScalingAdjustment: number }) => s.ScalingAdjustment).sort();
    expect(adjustments).toEqual([0, 1, 2, 3]);
    // The upper step policy starts at one message: anything waiting gets a task.
    const alarms = Object.values(t.findResources('AWS::CloudWatch::Alarm'));
    const backlogAlarms = alarms.filter((a) => JSON.stringify(a.Properties.Metrics ?? []).includes('FILL(intake, 0)'));
    expect(backlogAlarms).toHaveLength(2);
    const used = JSON.stringify(backlogAlarms[0].Properties.Metrics);
    expect(used).toContain('ApproximateNumberOfMessagesVisible');
    expect(used).toContain('ApproximateNumberOfMessagesNotVisible');
    expect(used).toMatch(/IntakeQueue/);
    expect(used).toMatch(/WorkQueue/);
    const thresholds = backlogAlarms.map((a) => a.Properties.Threshold).sort();
    expect(thresholds).toEqual([0, 1]);
  });

  test('alarms on both dead-letter queues and on the EMF failure metrics, all notifying the topic', () => {
    const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm'));
    for (const dlq of ['IntakeDlq', 'WorkDlq']) {
      const alarm = alarms.find((a) => a.Properties.MetricName === 'ApproximateNumberOfMessagesVisible'
        && JSON.stringify(a.Properties.Dimensions).includes(dlq));
      expect(alarm).toBeDefined();
      expect(alarm?.Properties.Threshold).toBe(1);
      expect(alarm?.Properties.AlarmActions).toEqual([{ Ref: expect.stringMatching(/^Alarms/) }]);
    }
    for (const name of ['FragmentsFailed', 'ObjectsFailed']) {
      const alarm = alarms.find((a) => a.Properties.MetricName === name);
      expect(alarm?.Properties).toMatchObject({
        Namespace: 'KvsStream',
        Statistic: 'Sum',
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        TreatMissingData: 'notBreaching',
      });
      // The alarm watches the dimensionless aggregate the worker writes with every line.
      expect(alarm?.Properties.Dimensions).toBeUndefined();
    }
    template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
    // CloudWatch may publish to the topic (its policy replaces SNS's default) and use its key.
    const publish = statementsOf(template, 'AWS::SNS::TopicPolicy').filter((s) => s.Effect === 'Allow');
    expect(publish).toEqual([expect.objectContaining({ Principal: { Service: 'cloudwatch.amazonaws.com' }, Action: 'sns:Publish' })]);
    const keyStatements = statementsOf(template, 'AWS::KMS::Key');
    expect(keyStatements.some((s) => JSON.stringify(s.Principal).includes('cloudwatch.amazonaws.com'))).toBe(true);
  });

  test('no Lambda function and no NAT gateway are deployed', () => {
    template.resourceCountIs('AWS::Lambda::Function', 0);
    template.resourceCountIs('AWS::EC2::NatGateway', 0);
    template.hasResourceProperties('AWS::EC2::SecurityGroup', {
      SecurityGroupEgress: [Match.objectLike({ FromPort: 443, ToPort: 443 })],
      SecurityGroupIngress: Match.absent(),
    });
  });

  test('every checkov suppression carries its reason', () => {
    const json = template.toJSON() as { Resources: Record<string, { Metadata?: { checkov?: { skip: { id: string; comment: string }[] } } }> };
    const skips = Object.values(json.Resources).flatMap((r) => r.Metadata?.checkov?.skip ?? []);
    expect(skips.length).toBeGreaterThan(0);
    for (const s of skips) {
      expect(s.id).toMatch(/^CKV2?_AWS_\d+$/);
      expect(s.comment.length).toBeGreaterThan(30);
    }
  });

  test('bad options are refused with the reason', () => {
    expect(() => synth({ streamPrefix: 'bad prefix' })).toThrow(/streamPrefix/);
    expect(() => synth({ concurrency: 0 })).toThrow(/concurrency/);
    expect(() => synth({ maxTasks: 1.5 })).toThrow(/maxTasks/);
  });
});

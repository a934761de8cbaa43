import * as cdk from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as path from 'path';
import { Construct } from 'constructs';

/** The EMF namespace and metric names the worker writes (examples/s3-to-kvs/src/emf.rs). */
export const METRICS_NAMESPACE = 'KvsStream';
export const METRIC_FRAGMENTS_FAILED = 'FragmentsFailed';
export const METRIC_OBJECTS_FAILED = 'ObjectsFailed';

/** What a deployment can change; every field has a default that deploys as is. */
export interface KvsStreamStackProps extends cdk.StackProps {
  /**
   * The image the service runs. Default: built from deploy/Dockerfile at deploy time and
   * pushed to the bootstrap ECR repository (`cdk deploy` needs Docker or Podman then).
   */
  readonly image?: ecs.ContainerImage;
  /**
   * Every stream the worker writes or creates starts with this; IAM allows nothing else.
   * Default `kvs-stream-`.
   */
  readonly streamPrefix?: string;
  /**
   * Target stream of an object, after the prefix: `{key_dir}` (the key's first path segment) or
   * `{bucket}` placeholders, or a fixed name. Default `{key_dir}`: one stream per top-level
   * folder of the bucket.
   */
  readonly streamTemplate?: string;
  /** Retention of the streams the worker creates, in hours. Default 24. */
  readonly retentionHours?: number;
  /** Objects one task streams at once (into different streams). Default 4. */
  readonly concurrency?: number;
  /** Upper bound of the service's task count. Default 4. */
  readonly maxTasks?: number;
  /** Task size. Defaults 1024 (1 vCPU) and 2048 MiB. */
  readonly cpu?: number;
  readonly memoryMiB?: number;
  /**
   * A role the worker assumes to call PutMedia (the Node sample's `ECS_ROLE`). Default none: the
   * task role signs PutMedia itself. When set, the task role may assume exactly this role.
   */
  readonly putMediaRoleArn?: string;
  /** Where alarm notifications go (an email subscription to the alarm topic). Default none. */
  readonly alarmEmail?: string;
  /** Retention of the service's logs. Default one month. */
  readonly logRetention?: logs.RetentionDays;
  /** Deliveries before a message is dead-lettered. Default 5. */
  readonly maxReceiveCount?: number;
}

/**
 * The upload bucket, its notifications into an intake queue, the FIFO work queue the workers
 * order by target stream, and the s3-to-kvs worker on ECS Fargate scaled on the queues'
 * backlog (to zero when idle). See docs/deploy.md.
 */
export class KvsStreamStack extends cdk.Stack {
  readonly bucket: s3.Bucket;
  readonly intakeQueue: sqs.Queue;
  readonly intakeDlq: sqs.Queue;
  readonly workQueue: sqs.Queue;
  readonly workDlq: sqs.Queue;
  readonly service: ecs.FargateService;
  readonly taskRole: iam.Role;

  constructor(scope: Construct, id: string, props: KvsStreamStackProps = {}) {
    super(scope, id, props);

    const streamPrefix = props.streamPrefix ?? 'kvs-stream-';
    const streamTemplate = props.streamTemplate ?? '{key_dir}';
    const retentionHours = props.retentionHours ?? 24;
    const concurrency = props.concurrency ?? 4;
    const maxTasks = props.maxTasks ?? 4;
    const maxReceiveCount = props.maxReceiveCount ?? 5;
    if (!/^[a-zA-Z0-9_.-]{1,64}$/.test(streamPrefix)) {
      throw new Error(`streamPrefix ${JSON.stringify(streamPrefix)}: KVS names allow [a-zA-Z0-9_.-], at most 256 characters; keep the prefix under 64`);
    }
    if (streamPrefix.includes('*')) {
      throw new Error('streamPrefix must not contain *');
    }
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new Error(`concurrency must be a positive integer, got ${concurrency}`);
    }
    if (!Number.isInteger(maxTasks) || maxTasks < 1) {
      throw new Error(`maxTasks must be a positive integer, got ${maxTasks}`);
    }

    // One customer-managed key for the data at rest that is not SQS's (uploads, logs, alarms).
    const key = new kms.Key(this, 'Key', {
      description: 'kvs-stream: upload bucket, logs, alarm topic',
      enableKeyRotation: true,
      removalPolicy: cdk.RemovalPolicy.RETAIN,
    });
    key.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'CloudWatchLogs',
      principals: [new iam.ServicePrincipal(`logs.${this.region}.amazonaws.com`)],
      actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
      resources: ['*'],
      conditions: {
        ArnLike: { 'kms:EncryptionContext:aws:logs:arn': `arn:${this.partition}:logs:${this.region}:${this.account}:log-group:*` },
      },
    }));
    key.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'CloudWatchAlarmsToTopic',
      principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
      actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
      resources: ['*'],
      conditions: { StringEquals: { 'aws:SourceAccount': this.account } },
    }));

    // Queues. SQS-managed encryption: S3 can then notify the intake queue without a key grant.
    this.intakeDlq = new sqs.Queue(this, 'IntakeDlq', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: cdk.Duration.days(14),
    });
    this.intakeQueue = new sqs.Queue(this, 'IntakeQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: cdk.Duration.days(4),
      visibilityTimeout: cdk.Duration.seconds(60),
      deadLetterQueue: { queue: this.intakeDlq, maxReceiveCount },
    });
    this.workDlq = new sqs.Queue(this, 'WorkDlq', {
      fifo: true,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: cdk.Duration.days(14),
    });
    this.workQueue = new sqs.Queue(this, 'WorkQueue', {
      fifo: true,
      // The worker sets the deduplication id (bucket/key/sequencer of the S3 event).
      contentBasedDeduplication: false,
      // High-throughput FIFO: order and deduplication per message group (= target stream).
      deduplicationScope: sqs.DeduplicationScope.MESSAGE_GROUP,
      fifoThroughputLimit: sqs.FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: cdk.Duration.days(4),
      // The worker extends the visibility while an object streams.
      visibilityTimeout: cdk.Duration.minutes(5),
      deadLetterQueue: { queue: this.workDlq, maxReceiveCount },
    });

    const sseSqs: [string, string][] = [
      ['CKV_AWS_27', 'Encrypted at rest with SSE-SQS (SqsManagedSseEnabled); the check only recognises KmsMasterKeyId. SSE-SQS lets S3 notify the queue without a KMS key grant.'],
    ];
    for (const queue of [this.intakeDlq, this.intakeQueue, this.workDlq, this.workQueue]) {
      suppress(queue, sseSqs);
    }

    // Upload bucket. Its name is fixed before creation (stack id's first UUID segment, account)
    // so the intake queue's policy can name it without a reference cycle, and the notification
    // configuration is set on the bucket itself: no custom-resource Lambda in the stack.
    const stackUuidHead = cdk.Fn.select(0, cdk.Fn.split('-', cdk.Fn.select(2, cdk.Fn.split('/', this.stackId))));
    const bucketName = cdk.Fn.join('-', ['kvs-stream-uploads', stackUuidHead, this.account]);
    const bucketArn = `arn:${this.partition}:s3:::${bucketName}`;
    const accessLogs = new s3.Bucket(this, 'AccessLogs', {
      // Server access log delivery supports SSE-S3 only.
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      versioned: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      lifecycleRules: [{ expiration: cdk.Duration.days(90), noncurrentVersionExpiration: cdk.Duration.days(7) }],
      removalPolicy: cdk.RemovalPolicy.RETAIN,
    });
    suppress(accessLogs, [
      ['CKV_AWS_18', 'This is the access-log bucket; logging it into itself would loop.'],
    ]);
    this.bucket = new s3.Bucket(this, 'Uploads', {
      bucketName,
      encryption: s3.BucketEncryption.KMS,
      encryptionKey: key,
      bucketKeyEnabled: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      versioned: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      serverAccessLogsBucket: accessLogs,
      serverAccessLogsPrefix: 'uploads/',
      // Versioning keeps an overwritten upload recoverable for a week, no longer.
      lifecycleRules: [{ noncurrentVersionExpiration: cdk.Duration.days(7) }],
      removalPolicy: cdk.RemovalPolicy.RETAIN,
    });
    // Added to the queue's one policy (enforceSSL made it): a second QueuePolicy on the same
    // queue would overwrite the first.
    this.intakeQueue.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'S3Notifications',
      principals: [new iam.ServicePrincipal('s3.amazonaws.com')],
      actions: ['sqs:SendMessage'],
      resources: [this.intakeQueue.queueArn],
      conditions: {
        ArnEquals: { 'aws:SourceArn': bucketArn },
        StringEquals: { 'aws:SourceAccount': this.account },
      },
    }));
    const intakePolicy = this.intakeQueue.node.tryFindChild('Policy');
    if (!intakePolicy) {
      throw new Error('the intake queue has no resource policy');
    }
    const cfnBucket = this.bucket.node.defaultChild as s3.CfnBucket;
    cfnBucket.notificationConfiguration = {
      queueConfigurations: [{ event: 's3:ObjectCreated:*', queue: this.intakeQueue.queueArn }],
    };
    // S3 checks that it may send to the queue when the configuration is set.
    this.bucket.node.addDependency(intakePolicy);

    // Network: public subnets and a public IP per task, but no inbound rule (egress 443 only).
    // A NAT gateway would cost $0.045 per GB of video, five times KVS's ingestion price.
    const vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: 0,
      subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24, mapPublicIpOnLaunch: false }],
      restrictDefaultSecurityGroup: false,
    });
    const flowLogs = new logs.LogGroup(this, 'FlowLogs', {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      encryptionKey: key,
      removalPolicy: cdk.RemovalPolicy.DESTROY,
    });
    vpc.addFlowLog('FlowLog', { destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs) });
    // The default security group has no rules that matter: nothing is placed in it.
    const securityGroup = new ec2.SecurityGroup(this, 'WorkerSg', {
      vpc,
      description: 'kvs-stream worker: no inbound, HTTPS out to AWS APIs',
      allowAllOutbound: false,
    });
    securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'HTTPS to S3, SQS, KVS, STS, ECR, Logs');

    const cluster = new ecs.Cluster(this, 'Cluster', {
      vpc,
      containerInsightsV2: ecs.ContainerInsights.ENABLED,
    });

    // The task role: least privilege for what the worker does, nothing else.
    this.taskRole = new iam.Role(this, 'TaskRole', {
      assumedBy: new iam.ServicePrincipal('ecs-tasks.amazonaws.com', {
        conditions: {
          // Only ECS tasks of this account assume it (confused-deputy guard).
          StringEquals: { 'aws:SourceAccount': this.account },
          ArnLike: { 'aws:SourceArn': `arn:${this.partition}:ecs:${this.region}:${this.account}:*` },
        },
      }),
      description: 'kvs-stream worker: read uploads, consume the queues, write streams under the prefix',
    });
    const streamArns = `arn:${this.partition}:kinesisvideo:${this.region}:${this.account}:stream/${streamPrefix}*/*`;
    this.taskRole.addToPolicy(new iam.PolicyStatement({
      sid: 'StreamsUnderPrefix',
      actions: [
        'kinesisvideo:PutMedia',
        'kinesisvideo:GetDataEndpoint',
        'kinesisvideo:DescribeStream',
        'kinesisvideo:CreateStream',
        'kinesisvideo:ListFragments',
        'kinesisvideo:GetMediaForFragmentList',
      ],
      resources: [streamArns],
    }));
    this.taskRole.addToPolicy(new iam.PolicyStatement({
      sid: 'ReadUploads',
      actions: ['s3:GetObject'],
      resources: [this.bucket.arnForObjects('*')],
    }));
    this.taskRole.addToPolicy(new iam.PolicyStatement({
      // Without it S3 answers 403 instead of 404 for a missing key, and the worker could not
      // tell "deleted before it was streamed" (dead-letter at once) from a permission problem.
      sid: 'MissingKeysAre404',
      actions: ['s3:ListBucket'],
      resources: [this.bucket.bucketArn],
    }));
    this.taskRole.addToPolicy(new iam.PolicyStatement({
      sid: 'DecryptUploads',
      actions: ['kms:Decrypt'],
      resources: [key.keyArn],
      conditions: { StringEquals: { 'kms:ViaService': `s3.${this.region}.amazonaws.com` } },
    }));
    this.taskRole.addToPolicy(new iam.PolicyStatement({
      sid: 'ConsumeQueues',
      actions: ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:ChangeMessageVisibility', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl'],
      resources: [this.intakeQueue.queueArn, this.workQueue.queueArn],
    }));
    this.taskRole.addToPolicy(new iam.PolicyStatement({
      // Every worker forwards intake events into the FIFO queue; processObject enqueues there too.
      sid: 'EnqueueWork',
      actions: ['sqs:SendMessage'],
      resources: [this.workQueue.queueArn],
    }));
    this.taskRole.addToPolicy(new iam.PolicyStatement({
      // A message retrying cannot help (not media, no such key) goes to the queue's DLQ at once:
      // the worker finds it through the RedrivePolicy (GetQueueUrl) and sends it there.
      sid: 'DeadLetterAtOnce',
      actions: ['sqs:SendMessage', 'sqs:GetQueueUrl'],
      resources: [this.intakeDlq.queueArn, this.workDlq.queueArn],
    }));
    if (props.putMediaRoleArn) {
      this.taskRole.addToPolicy(new iam.PolicyStatement({
        sid: 'AssumePutMediaRole',
        actions: ['sts:AssumeRole'],
        resources: [props.putMediaRoleArn],
      }));
    }

    const serviceLogs = new logs.LogGroup(this, 'ServiceLogs', {
      retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
      encryptionKey: key,
      removalPolicy: cdk.RemovalPolicy.DESTROY,
    });

    const taskDefinition = new ecs.FargateTaskDefinition(this, 'Task', {
      cpu: props.cpu ?? 1024,
      memoryLimitMiB: props.memoryMiB ?? 2048,
      taskRole: this.taskRole,
      runtimePlatform: { cpuArchitecture: ecs.CpuArchitecture.X86_64, operatingSystemFamily: ecs.OperatingSystemFamily.LINUX },
    });
    // Fargate's longest stop timeout; the worker drains for a little less, then exits 0.
    const stopTimeout = cdk.Duration.seconds(120);
    const image = props.image ?? ecs.ContainerImage.fromAsset(path.join(__dirname, '..', '..', '..'), {
      file: 'deploy/Dockerfile',
      exclude: ['target', 'target-*', '.git', 'deploy/cdk/node_modules', 'deploy/cdk/cdk.out', 'fuzz/target', 'fuzz/corpus', 'fuzz/artifacts'],
    });
    const environment: Record<string, string> = {
      QUEUE_URL: this.workQueue.queueUrl,
      INTAKE_QUEUE_URL: this.intakeQueue.queueUrl,
      STREAM_TEMPLATE: `${streamPrefix}${streamTemplate}`,
      CREATE_STREAMS: 'true',
      RETENTION_HOURS: String(retentionHours),
      CONCURRENCY: String(concurrency),
      DRAIN_SECONDS: String(stopTimeout.toSeconds() - 15),
      PORT: '8080',
      LOG_FORMAT: 'json',
      METRICS_NAMESPACE,
      AWS_REGION: this.region,
    };
    if (props.putMediaRoleArn) {
      environment.ECS_ROLE = props.putMediaRoleArn;
    }
    const tmp = 'tmp';
    taskDefinition.addVolume({ name: tmp });
    const container = taskDefinition.addContainer('worker', {
      image,
      command: ['worker'],
      user: '10001:10001',
      readonlyRootFilesystem: true,
      essential: true,
      environment,
      stopTimeout,
      linuxParameters: new ecs.LinuxParameters(this, 'LinuxParameters', { initProcessEnabled: true }),
      healthCheck: {
        command: ['CMD', '/usr/local/bin/s3-to-kvs', 'healthcheck'],
        interval: cdk.Duration.seconds(30),
        timeout: cdk.Duration.seconds(5),
        retries: 3,
        startPeriod: cdk.Duration.seconds(15),
      },
      logging: ecs.LogDrivers.awsLogs({ logGroup: serviceLogs, streamPrefix: 'worker' }),
    });
    // ffmpeg and the pipeline write temporary files; the root filesystem stays read-only.
    container.addMountPoints({ sourceVolume: tmp, containerPath: '/tmp', readOnly: false });

    this.service = new ecs.FargateService(this, 'Service', {
      cluster,
      taskDefinition,
      desiredCount: 0,
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      circuitBreaker: { rollback: true },
      assignPublicIp: true,
      securityGroups: [securityGroup],
      vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC },
      enableExecuteCommand: false,
      propagateTags: ecs.PropagatedTagSource.SERVICE,
    });

    // Scaling on backlog: messages waiting in either queue plus objects streaming now. Zero
    // only when nothing waits and nothing streams, so a scale-in never interrupts work that a
    // busy task would finish (a stopped task drains and returns its messages anyway).
    const backlog = new cloudwatch.MathExpression({
      label: 'Backlog',
      expression: 'FILL(intake, 0) + FILL(waiting, 0) + FILL(streaming, 0)',
      usingMetrics: {
        intake: this.intakeQueue.metricApproximateNumberOfMessagesVisible({ period: cdk.Duration.minutes(1), statistic: 'Maximum' }),
        waiting: this.workQueue.metricApproximateNumberOfMessagesVisible({ period: cdk.Duration.minutes(1), statistic: 'Maximum' }),
        streaming: this.workQueue.metricApproximateNumberOfMessagesNotVisible({ period: cdk.Duration.minutes(1), statistic: 'Maximum' }),
      },
      period: cdk.Duration.minutes(1),
    });
    const scaling = this.service.autoScaleTaskCount({ minCapacity: 0, maxCapacity: maxTasks });
    // Exact capacity: ceil(backlog / concurrency) tasks, capped at maxTasks.
    const steps: { lower?: number; upper?: number; change: number }[] = [{ upper: 0, change: 0 }];
    for (let tasks = 1; tasks <= maxTasks; tasks++) {
      steps.push({ lower: (tasks - 1) * concurrency + 1, change: tasks });
    }
    scaling.scaleOnMetric('Backlog', {
      metric: backlog,
      scalingSteps: steps,
      adjustmentType: cdk.aws_applicationautoscaling.AdjustmentType.EXACT_CAPACITY,
      cooldown: cdk.Duration.minutes(2),
      evaluationPeriods: 1,
    });

    // Alarms.
    const topic = new sns.Topic(this, 'Alarms', { masterKey: key, enforceSSL: true });
    // The topic's own policy replaces SNS's default one, so CloudWatch needs naming.
    topic.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'CloudWatchAlarms',
      principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
      actions: ['sns:Publish'],
      resources: [topic.topicArn],
      conditions: {
        ArnLike: { 'aws:SourceArn': `arn:${this.partition}:cloudwatch:${this.region}:${this.account}:alarm:*` },
        StringEquals: { 'aws:SourceAccount': this.account },
      },
    }));
    if (props.alarmEmail) {
      new sns.Subscription(this, 'AlarmEmail', { topic, protocol: sns.SubscriptionProtocol.EMAIL, endpoint: props.alarmEmail });
    }
    const notify = new cwActions.SnsAction(topic);
    for (const [id, queue] of [['IntakeDlq', this.intakeDlq], ['WorkDlq', this.workDlq]] as const) {
      const alarm = queue.metricApproximateNumberOfMessagesVisible({ period: cdk.Duration.minutes(1), statistic: 'Maximum' })
        .createAlarm(this, `${id}NotEmpty`, {
          alarmDescription: `Messages in ${id}: objects that could not be streamed; the worker's log says why.`,
          threshold: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          evaluationPeriods: 1,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        });
      alarm.addAlarmAction(notify);
    }
    for (const [name, description] of [
      [METRIC_FRAGMENTS_FAILED, 'KVS refused or never acknowledged fragments (EMF metric from the worker).'],
      [METRIC_OBJECTS_FAILED, 'Objects failed to stream (EMF metric from the worker).'],
    ]) {
      new cloudwatch.Metric({ namespace: METRICS_NAMESPACE, metricName: name, statistic: 'Sum', period: cdk.Duration.minutes(5) })
        .createAlarm(this, `${name}Alarm`, {
          alarmDescription: description,
          threshold: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          evaluationPeriods: 1,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        })
        .addAlarmAction(notify);
    }

    new cdk.CfnOutput(this, 'BucketName', { value: this.bucket.bucketName });
    new cdk.CfnOutput(this, 'IntakeQueueUrl', { value: this.intakeQueue.queueUrl });
    new cdk.CfnOutput(this, 'WorkQueueUrl', { value: this.workQueue.queueUrl });
    new cdk.CfnOutput(this, 'WorkDlqUrl', { value: this.workDlq.queueUrl });
    new cdk.CfnOutput(this, 'ServiceName', { value: this.service.serviceName });
    new cdk.CfnOutput(this, 'ClusterName', { value: cluster.clusterName });
    new cdk.CfnOutput(this, 'AlarmTopicArn', { value: topic.topicArn });
  }
}

/**
 * Records checkov suppressions on a construct's CloudFormation resource, each with the reason,
 * so the justification stands next to what it excuses in the template.
 */
export function suppress(construct: Construct, checks: [string, string][]): void {
  const resource = (construct.node.defaultChild ?? construct) as cdk.CfnResource;
  const existing = (resource.getMetadata('checkov') as { skip?: { id: string; comment: string }[] }) ?? {};
  resource.addMetadata('checkov', {
    skip: [...(existing.skip ?? []), ...checks.map(([id, comment]) => ({ id, comment }))],
  });
}

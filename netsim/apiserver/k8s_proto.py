"""The Kubernetes protobuf messages netsim.apiserver.k8s_pb decodes, written down as data: per API
group, the messages of k8s.io/api's and k8s.io/apimachinery's generated.proto that the kinds in
GROUPS use, with upstream's field numbers and the JSON names of the Go types.  Notation, one
proto-like line per message (wrapped): `repeated T f = N;` a list, `map<string, V> f = N;`
upstream's map field, `*T f = N;` a scalar whose zero value Go's JSON keeps (a pointer, or a json
tag without omitempty), `inline T f = N;` a Go embedded struct whose fields JSON writes into the
parent; a type "alias.Name" is another group's.  Pure data.  May use: nothing."""

# Per API group (its alias), from k8s.io/api and k8s.io/apimachinery generated.proto (what the
# kinds in GROUPS use, all their fields; JobSpec's alpha `scheduling` left out).  A type
# "alias.Name" is another group's; "map<string, V>" is upstream's map field; `*` and `inline` as
# the module docstring says, read off the Go types' json tags.
PROTO = {
    "meta": """
message Condition { *string type = 1; *string status = 2; int64 observedGeneration = 3; Time lastTransitionTime = 4;
  *string reason = 5; *string message = 6; }
message DeleteOptions { *int64 gracePeriodSeconds = 1; Preconditions preconditions = 2; *bool orphanDependents = 3;
  *string propagationPolicy = 4; repeated string dryRun = 5;
  *bool ignoreStoreReadErrorWithClusterBreakingPotential = 6; }
message FieldsV1 { *bytes Raw = 1; }
message LabelSelector { map<string, string> matchLabels = 1;
  repeated LabelSelectorRequirement matchExpressions = 2; }
message LabelSelectorRequirement { *string key = 1; *string operator = 2; repeated string values = 3; }
message ManagedFieldsEntry { string manager = 1; string operation = 2; string apiVersion = 3; Time time = 4;
  string fieldsType = 6; FieldsV1 fieldsV1 = 7; string subresource = 8; }
message MicroTime { int64 seconds = 1; int32 nanos = 2; }
message ObjectMeta { string name = 1; string generateName = 2; string namespace = 3; string selfLink = 4;
  string uid = 5; string resourceVersion = 6; int64 generation = 7; Time creationTimestamp = 8;
  Time deletionTimestamp = 9; *int64 deletionGracePeriodSeconds = 10; map<string, string> labels = 11;
  map<string, string> annotations = 12; repeated OwnerReference ownerReferences = 13;
  repeated string finalizers = 14; repeated ManagedFieldsEntry managedFields = 17; }
message OwnerReference { *string apiVersion = 5; *string kind = 1; *string name = 3; *string uid = 4;
  *bool controller = 6; *bool blockOwnerDeletion = 7; }
message Preconditions { *string uid = 1; *string resourceVersion = 2; }
message Time { int64 seconds = 1; int32 nanos = 2; }
""",
    "runtime": """
message RawExtension { *bytes raw = 1; }
message TypeMeta { string apiVersion = 1; string kind = 2; }
message Unknown { inline TypeMeta typeMeta = 1; *bytes raw = 2; string contentEncoding = 3;
  string contentType = 4; }
""",
    "intstr": """
message IntOrString { int64 type = 1; int32 intVal = 2; string strVal = 3; }
""",
    "resource": """
message Quantity { string string = 1; }
""",
    "core": """
message AWSElasticBlockStoreVolumeSource { *string volumeID = 1; string fsType = 2; int32 partition = 3;
  bool readOnly = 4; }
message Affinity { NodeAffinity nodeAffinity = 1; PodAffinity podAffinity = 2;
  PodAntiAffinity podAntiAffinity = 3; }
message AppArmorProfile { *string type = 1; *string localhostProfile = 2; }
message AttachedVolume { *string name = 1; *string devicePath = 2; }
message AzureDiskVolumeSource { *string diskName = 1; *string diskURI = 2; *string cachingMode = 3;
  *string fsType = 4; *bool readOnly = 5; *string kind = 6; }
message AzureFilePersistentVolumeSource { *string secretName = 1; *string shareName = 2; bool readOnly = 3;
  *string secretNamespace = 4; }
message AzureFileVolumeSource { *string secretName = 1; *string shareName = 2; bool readOnly = 3; }
message CSIPersistentVolumeSource { *string driver = 1; *string volumeHandle = 2; bool readOnly = 3;
  string fsType = 4; map<string, string> volumeAttributes = 5; SecretReference controllerPublishSecretRef = 6;
  SecretReference nodeStageSecretRef = 7; SecretReference nodePublishSecretRef = 8;
  SecretReference controllerExpandSecretRef = 9; SecretReference nodeExpandSecretRef = 10; }
message CSIVolumeSource { *string driver = 1; *bool readOnly = 2; *string fsType = 3;
  map<string, string> volumeAttributes = 4; LocalObjectReference nodePublishSecretRef = 5; }
message Capabilities { repeated string add = 1; repeated string drop = 2; }
message CephFSPersistentVolumeSource { repeated string monitors = 1; string path = 2; string user = 3;
  string secretFile = 4; SecretReference secretRef = 5; bool readOnly = 6; }
message CephFSVolumeSource { repeated string monitors = 1; string path = 2; string user = 3; string secretFile = 4;
  LocalObjectReference secretRef = 5; bool readOnly = 6; }
message CinderPersistentVolumeSource { *string volumeID = 1; string fsType = 2; bool readOnly = 3;
  SecretReference secretRef = 4; }
message CinderVolumeSource { *string volumeID = 1; string fsType = 2; bool readOnly = 3;
  LocalObjectReference secretRef = 4; }
message ClientIPConfig { *int32 timeoutSeconds = 1; }
message ClusterTrustBundleProjection { *string name = 1; *string signerName = 2;
  meta.LabelSelector labelSelector = 3; *bool optional = 5; *string path = 4; *int64 user = 6; }
message ConfigMap { meta.ObjectMeta metadata = 1; *bool immutable = 4; map<string, string> data = 2;
  map<string, bytes> binaryData = 3; }
message ConfigMapEnvSource { inline LocalObjectReference localObjectReference = 1; *bool optional = 2; }
message ConfigMapKeySelector { inline LocalObjectReference localObjectReference = 1; *string key = 2;
  *bool optional = 3; }
message ConfigMapNodeConfigSource { *string namespace = 1; *string name = 2; string uid = 3;
  string resourceVersion = 4; *string kubeletConfigKey = 5; }
message ConfigMapProjection { inline LocalObjectReference localObjectReference = 1; repeated KeyToPath items = 2;
  *bool optional = 4; }
message ConfigMapVolumeSource { inline LocalObjectReference localObjectReference = 1; repeated KeyToPath items = 2;
  *int32 defaultMode = 3; *bool optional = 4; *int64 defaultUser = 5; }
message Container { *string name = 1; string image = 2; repeated string command = 3; repeated string args = 4;
  string workingDir = 5; repeated ContainerPort ports = 6; repeated EnvFromSource envFrom = 19;
  repeated EnvVar env = 7; ResourceRequirements resources = 8; repeated ContainerResizePolicy resizePolicy = 23;
  *string restartPolicy = 24; repeated ContainerRestartRule restartPolicyRules = 25;
  repeated VolumeMount volumeMounts = 9; repeated VolumeDevice volumeDevices = 21; Probe livenessProbe = 10;
  Probe readinessProbe = 11; Probe startupProbe = 22; Lifecycle lifecycle = 12; string terminationMessagePath = 13;
  string terminationMessagePolicy = 20; string imagePullPolicy = 14; SecurityContext securityContext = 15;
  bool stdin = 16; bool stdinOnce = 17; bool tty = 18; }
message ContainerExtendedResourceRequest { *string containerName = 1; *string resourceName = 2;
  *string requestName = 3; }
message ContainerImage { repeated string names = 1; int64 sizeBytes = 2; }
message ContainerPort { string name = 1; int32 hostPort = 2; *int32 containerPort = 3; string protocol = 4;
  string hostIP = 5; }
message ContainerResizePolicy { *string resourceName = 1; *string restartPolicy = 2; }
message ContainerRestartRule { string action = 1; ContainerRestartRuleOnExitCodes exitCodes = 2; }
message ContainerRestartRuleOnExitCodes { string operator = 1; repeated int32 values = 2; }
message ContainerState { ContainerStateWaiting waiting = 1; ContainerStateRunning running = 2;
  ContainerStateTerminated terminated = 3; }
message ContainerStateRunning { meta.Time startedAt = 1; }
message ContainerStateTerminated { *int32 exitCode = 1; int32 signal = 2; string reason = 3; string message = 4;
  meta.Time startedAt = 5; meta.Time finishedAt = 6; string containerID = 7; }
message ContainerStateWaiting { string reason = 1; string message = 2; }
message ContainerStatus { *string name = 1; ContainerState state = 2; ContainerState lastState = 3; *bool ready = 4;
  *int32 restartCount = 5; *string image = 6; *string imageID = 7; string containerID = 8; *bool started = 9;
  map<string, resource.Quantity> allocatedResources = 10; ResourceRequirements resources = 11;
  repeated VolumeMountStatus volumeMounts = 12; ContainerUser user = 13;
  repeated ResourceStatus allocatedResourcesStatus = 14; *string stopSignal = 15; }
message ContainerUser { LinuxContainerUser linux = 1; }
message DaemonEndpoint { *int32 Port = 1; }
message DownwardAPIProjection { repeated DownwardAPIVolumeFile items = 1; }
message DownwardAPIVolumeFile { *string path = 1; ObjectFieldSelector fieldRef = 2;
  ResourceFieldSelector resourceFieldRef = 3; *int32 mode = 4; *int64 user = 5; }
message DownwardAPIVolumeSource { repeated DownwardAPIVolumeFile items = 1; *int32 defaultMode = 2;
  *int64 defaultUser = 3; }
message EmptyDirVolumeSource { string medium = 1; resource.Quantity sizeLimit = 2; *int32 mode = 3; }
message EndpointAddress { *string ip = 1; string hostname = 3; *string nodeName = 4;
  ObjectReference targetRef = 2; }
message EndpointPort { string name = 1; *int32 port = 2; string protocol = 3; *string appProtocol = 4; }
message EndpointSubset { repeated EndpointAddress addresses = 1; repeated EndpointAddress notReadyAddresses = 2;
  repeated EndpointPort ports = 3; }
message Endpoints { meta.ObjectMeta metadata = 1; repeated EndpointSubset subsets = 2; }
message EnvFromSource { string prefix = 1; ConfigMapEnvSource configMapRef = 2; SecretEnvSource secretRef = 3; }
message EnvVar { *string name = 1; string value = 2; EnvVarSource valueFrom = 3; }
message EnvVarSource { ObjectFieldSelector fieldRef = 1; ResourceFieldSelector resourceFieldRef = 2;
  ConfigMapKeySelector configMapKeyRef = 3; SecretKeySelector secretKeyRef = 4; FileKeySelector fileKeyRef = 5; }
message EphemeralContainer { EphemeralContainerCommon ephemeralContainerCommon = 1;
  string targetContainerName = 2; }
message EphemeralContainerCommon { *string name = 1; string image = 2; repeated string command = 3;
  repeated string args = 4; string workingDir = 5; repeated ContainerPort ports = 6;
  repeated EnvFromSource envFrom = 19; repeated EnvVar env = 7; ResourceRequirements resources = 8;
  repeated ContainerResizePolicy resizePolicy = 23; *string restartPolicy = 24;
  repeated ContainerRestartRule restartPolicyRules = 25; repeated VolumeMount volumeMounts = 9;
  repeated VolumeDevice volumeDevices = 21; Probe livenessProbe = 10; Probe readinessProbe = 11;
  Probe startupProbe = 22; Lifecycle lifecycle = 12; string terminationMessagePath = 13;
  string terminationMessagePolicy = 20; string imagePullPolicy = 14; SecurityContext securityContext = 15;
  bool stdin = 16; bool stdinOnce = 17; bool tty = 18; }
message EphemeralVolumeSource { PersistentVolumeClaimTemplate volumeClaimTemplate = 1; }
message Event { meta.ObjectMeta metadata = 1; ObjectReference involvedObject = 2; string reason = 3;
  string message = 4; EventSource source = 5; meta.Time firstTimestamp = 6; meta.Time lastTimestamp = 7;
  int32 count = 8; string type = 9; meta.MicroTime eventTime = 10; EventSeries series = 11; string action = 12;
  ObjectReference related = 13; *string reportingComponent = 14; *string reportingInstance = 15; }
message EventSeries { int32 count = 1; meta.MicroTime lastObservedTime = 2; }
message EventSource { string component = 1; string host = 2; }
message EvictionResponder { *string name = 1; *int32 priority = 2; }
message ExecAction { repeated string command = 1; }
message FCVolumeSource { repeated string targetWWNs = 1; *int32 lun = 2; string fsType = 3; bool readOnly = 4;
  repeated string wwids = 5; }
message FileKeySelector { *string volumeName = 1; *string path = 2; *string key = 3; *bool optional = 4; }
message FlexPersistentVolumeSource { *string driver = 1; string fsType = 2; SecretReference secretRef = 3;
  bool readOnly = 4; map<string, string> options = 5; }
message FlexVolumeSource { *string driver = 1; string fsType = 2; LocalObjectReference secretRef = 3;
  bool readOnly = 4; map<string, string> options = 5; }
message FlockerVolumeSource { string datasetName = 1; string datasetUUID = 2; }
message GCEPersistentDiskVolumeSource { *string pdName = 1; string fsType = 2; int32 partition = 3;
  bool readOnly = 4; }
message GRPCAction { *int32 port = 1; *string service = 2; *string mode = 3; }
message GitRepoVolumeSource { *string repository = 1; string revision = 2; string directory = 3; }
message GlusterfsPersistentVolumeSource { *string endpoints = 1; *string path = 2; bool readOnly = 3;
  *string endpointsNamespace = 4; }
message GlusterfsVolumeSource { *string endpoints = 1; *string path = 2; bool readOnly = 3; }
message HTTPGetAction { string path = 1; intstr.IntOrString port = 2; string host = 3; string scheme = 4;
  repeated HTTPHeader httpHeaders = 5; *string protocol = 6; }
message HTTPHeader { *string name = 1; *string value = 2; }
message HostAlias { *string ip = 1; repeated string hostnames = 2; }
message HostIP { *string ip = 1; }
message HostPathVolumeSource { *string path = 1; *string type = 2; }
message ISCSIPersistentVolumeSource { *string targetPortal = 1; *string iqn = 2; *int32 lun = 3;
  string iscsiInterface = 4; string fsType = 5; bool readOnly = 6; repeated string portals = 7;
  bool chapAuthDiscovery = 8; bool chapAuthSession = 11; SecretReference secretRef = 10;
  *string initiatorName = 12; }
message ISCSIVolumeSource { *string targetPortal = 1; *string iqn = 2; *int32 lun = 3; string iscsiInterface = 4;
  string fsType = 5; bool readOnly = 6; repeated string portals = 7; bool chapAuthDiscovery = 8;
  bool chapAuthSession = 11; LocalObjectReference secretRef = 10; *string initiatorName = 12; }
message ImageVolumeSource { string reference = 1; string pullPolicy = 2; }
message ImageVolumeStatus { string imageRef = 1; }
message KeyToPath { *string key = 1; *string path = 2; *int32 mode = 3; *int64 user = 4; }
message Lifecycle { LifecycleHandler postStart = 1; LifecycleHandler preStop = 2; *string stopSignal = 3; }
message LifecycleHandler { ExecAction exec = 1; HTTPGetAction httpGet = 2; TCPSocketAction tcpSocket = 3;
  SleepAction sleep = 4; }
message LimitRange { meta.ObjectMeta metadata = 1; LimitRangeSpec spec = 2; }
message LimitRangeItem { *string type = 1; map<string, resource.Quantity> max = 2;
  map<string, resource.Quantity> min = 3; map<string, resource.Quantity> default = 4;
  map<string, resource.Quantity> defaultRequest = 5; map<string, resource.Quantity> maxLimitRequestRatio = 6; }
message LimitRangeSpec { repeated LimitRangeItem limits = 1; }
message LinuxContainerUser { *int64 uid = 1; *int64 gid = 2; repeated int64 supplementalGroups = 3; }
message LoadBalancerIngress { string ip = 1; string hostname = 2; *string ipMode = 3;
  repeated PortStatus ports = 4; }
message LoadBalancerStatus { repeated LoadBalancerIngress ingress = 1; }
message LocalObjectReference { string name = 1; }
message LocalVolumeSource { *string path = 1; *string fsType = 2; }
message ModifyVolumeStatus { string targetVolumeAttributesClassName = 1; *string status = 2; }
message NFSVolumeSource { *string server = 1; *string path = 2; bool readOnly = 3; }
message Namespace { meta.ObjectMeta metadata = 1; NamespaceSpec spec = 2; NamespaceStatus status = 3; }
message NamespaceCondition { *string type = 1; *string status = 2; meta.Time lastTransitionTime = 4;
  string reason = 5; string message = 6; }
message NamespaceSpec { repeated string finalizers = 1; }
message NamespaceStatus { string phase = 1; repeated NamespaceCondition conditions = 2; }
message Node { meta.ObjectMeta metadata = 1; NodeSpec spec = 2; NodeStatus status = 3; }
message NodeAddress { *string type = 1; *string address = 2; }
message NodeAffinity { NodeSelector requiredDuringSchedulingIgnoredDuringExecution = 1;
  repeated PreferredSchedulingTerm preferredDuringSchedulingIgnoredDuringExecution = 2; }
message NodeAllocatableMappedResources { *string name = 1; resource.Quantity quantity = 2; }
message NodeAllocatableOverheadResources { *string name = 1; resource.Quantity perPod = 2;
  resource.Quantity perContainer = 3; }
message NodeAllocatableResourceClaimStatus { *string resourceClaimName = 1; repeated string containers = 2;
  repeated NodeAllocatableMappedResources mapping = 4; repeated NodeAllocatableOverheadResources overhead = 5; }
message NodeCondition { *string type = 1; *string status = 2; meta.Time lastHeartbeatTime = 3;
  meta.Time lastTransitionTime = 4; string reason = 5; string message = 6; }
message NodeConfigSource { ConfigMapNodeConfigSource configMap = 2; }
message NodeConfigStatus { NodeConfigSource assigned = 1; NodeConfigSource active = 2;
  NodeConfigSource lastKnownGood = 3; string error = 4; }
message NodeDaemonEndpoints { DaemonEndpoint kubeletEndpoint = 1; }
message NodeFeatures { *bool supplementalGroupsPolicy = 1; }
message NodePodPreemptionPolicy { repeated string disableResizePreemption = 1; }
message NodeRuntimeHandler { *string name = 1; NodeRuntimeHandlerFeatures features = 2; }
message NodeRuntimeHandlerFeatures { *bool recursiveReadOnlyMounts = 1; *bool userNamespaces = 2; }
message NodeSelector { repeated NodeSelectorTerm nodeSelectorTerms = 1; }
message NodeSelectorRequirement { *string key = 1; *string operator = 2; repeated string values = 3; }
message NodeSelectorTerm { repeated NodeSelectorRequirement matchExpressions = 1;
  repeated NodeSelectorRequirement matchFields = 2; }
message NodeSpec { string podCIDR = 1; repeated string podCIDRs = 7; string providerID = 3; bool unschedulable = 4;
  repeated Taint taints = 5; NodeConfigSource configSource = 6; string externalID = 2;
  NodePodPreemptionPolicy podPreemptionPolicy = 8; }
message NodeStatus { map<string, resource.Quantity> capacity = 1; map<string, resource.Quantity> allocatable = 2;
  string phase = 3; repeated NodeCondition conditions = 4; repeated NodeAddress addresses = 5;
  NodeDaemonEndpoints daemonEndpoints = 6; NodeSystemInfo nodeInfo = 7; repeated ContainerImage images = 8;
  repeated string volumesInUse = 9; repeated AttachedVolume volumesAttached = 10; NodeConfigStatus config = 11;
  repeated NodeRuntimeHandler runtimeHandlers = 12; NodeFeatures features = 13;
  repeated string declaredFeatures = 14; }
message NodeSwapStatus { *int64 capacity = 1; }
message NodeSystemInfo { *string machineID = 1; *string systemUUID = 2; *string bootID = 3;
  *string kernelVersion = 4; *string osImage = 5; *string containerRuntimeVersion = 6; *string kubeletVersion = 7;
  *string kubeProxyVersion = 8; *string operatingSystem = 9; *string architecture = 10; NodeSwapStatus swap = 11; }
message ObjectFieldSelector { string apiVersion = 1; *string fieldPath = 2; }
message ObjectReference { string kind = 1; string namespace = 2; string name = 3; string uid = 4;
  string apiVersion = 5; string resourceVersion = 6; string fieldPath = 7; }
message PersistentVolume { meta.ObjectMeta metadata = 1; PersistentVolumeSpec spec = 2;
  PersistentVolumeStatus status = 3; }
message PersistentVolumeClaim { meta.ObjectMeta metadata = 1; PersistentVolumeClaimSpec spec = 2;
  PersistentVolumeClaimStatus status = 3; }
message PersistentVolumeClaimCondition { *string type = 1; *string status = 2; meta.Time lastProbeTime = 3;
  meta.Time lastTransitionTime = 4; string reason = 5; string message = 6; }
message PersistentVolumeClaimSpec { repeated string accessModes = 1; meta.LabelSelector selector = 4;
  VolumeResourceRequirements resources = 2; string volumeName = 3; *string storageClassName = 5;
  *string volumeMode = 6; TypedLocalObjectReference dataSource = 7; TypedObjectReference dataSourceRef = 8;
  *string volumeAttributesClassName = 9; }
message PersistentVolumeClaimStatus { string phase = 1; repeated string accessModes = 2;
  map<string, resource.Quantity> capacity = 3; repeated PersistentVolumeClaimCondition conditions = 4;
  map<string, resource.Quantity> allocatedResources = 5; map<string, string> allocatedResourceStatuses = 7;
  *string currentVolumeAttributesClassName = 8; ModifyVolumeStatus modifyVolumeStatus = 9;
  VolumeHealthStatus healthStatus = 10; }
message PersistentVolumeClaimTemplate { meta.ObjectMeta metadata = 1; PersistentVolumeClaimSpec spec = 2; }
message PersistentVolumeClaimVolumeSource { *string claimName = 1; bool readOnly = 2; }
message PersistentVolumeSource { GCEPersistentDiskVolumeSource gcePersistentDisk = 1;
  AWSElasticBlockStoreVolumeSource awsElasticBlockStore = 2; HostPathVolumeSource hostPath = 3;
  GlusterfsPersistentVolumeSource glusterfs = 4; NFSVolumeSource nfs = 5; RBDPersistentVolumeSource rbd = 6;
  ISCSIPersistentVolumeSource iscsi = 7; CinderPersistentVolumeSource cinder = 8;
  CephFSPersistentVolumeSource cephfs = 9; FCVolumeSource fc = 10; FlockerVolumeSource flocker = 11;
  FlexPersistentVolumeSource flexVolume = 12; AzureFilePersistentVolumeSource azureFile = 13;
  VsphereVirtualDiskVolumeSource vsphereVolume = 14; QuobyteVolumeSource quobyte = 15;
  AzureDiskVolumeSource azureDisk = 16; PhotonPersistentDiskVolumeSource photonPersistentDisk = 17;
  PortworxVolumeSource portworxVolume = 18; ScaleIOPersistentVolumeSource scaleIO = 19;
  LocalVolumeSource local = 20; StorageOSPersistentVolumeSource storageos = 21;
  CSIPersistentVolumeSource csi = 22; }
message PersistentVolumeSpec { map<string, resource.Quantity> capacity = 1;
  inline PersistentVolumeSource persistentVolumeSource = 2; repeated string accessModes = 3;
  ObjectReference claimRef = 4; string persistentVolumeReclaimPolicy = 5; string storageClassName = 6;
  repeated string mountOptions = 7; *string volumeMode = 8; VolumeNodeAffinity nodeAffinity = 9;
  *string volumeAttributesClassName = 10; }
message PersistentVolumeStatus { string phase = 1; string message = 2; string reason = 3;
  meta.Time lastPhaseTransitionTime = 4; }
message PhotonPersistentDiskVolumeSource { *string pdID = 1; string fsType = 2; }
message Pod { meta.ObjectMeta metadata = 1; PodSpec spec = 2; PodStatus status = 3; }
message PodAffinity { repeated PodAffinityTerm requiredDuringSchedulingIgnoredDuringExecution = 1;
  repeated WeightedPodAffinityTerm preferredDuringSchedulingIgnoredDuringExecution = 2; }
message PodAffinityTerm { meta.LabelSelector labelSelector = 1; repeated string namespaces = 2;
  *string topologyKey = 3; meta.LabelSelector namespaceSelector = 4; repeated string matchLabelKeys = 5;
  repeated string mismatchLabelKeys = 6; }
message PodAntiAffinity { repeated PodAffinityTerm requiredDuringSchedulingIgnoredDuringExecution = 1;
  repeated WeightedPodAffinityTerm preferredDuringSchedulingIgnoredDuringExecution = 2; }
message PodCertificateProjection { string signerName = 1; string keyType = 2; *int32 maxExpirationSeconds = 3;
  string credentialBundlePath = 4; string keyPath = 5; string certificateChainPath = 6;
  map<string, string> userAnnotations = 7; *int64 user = 8; }
message PodCondition { *string type = 1; int64 observedGeneration = 7; *string status = 2;
  meta.Time lastProbeTime = 3; meta.Time lastTransitionTime = 4; string reason = 5; string message = 6; }
message PodDNSConfig { repeated string nameservers = 1; repeated string searches = 2;
  repeated PodDNSConfigOption options = 3; }
message PodDNSConfigOption { string name = 1; *string value = 2; }
message PodExtendedResourceClaimStatus { repeated ContainerExtendedResourceRequest requestMappings = 1;
  *string resourceClaimName = 2; }
message PodIP { *string ip = 1; }
message PodOS { *string name = 1; }
message PodReadinessGate { *string conditionType = 1; }
message PodResourceClaim { *string name = 1; *string resourceClaimName = 3; *string resourceClaimTemplateName = 4; }
message PodResourceClaimStatus { *string name = 1; *string resourceClaimName = 2; }
message PodSchedulingGate { *string name = 1; }
message PodSchedulingGroup { *string podGroupName = 1; }
message PodSecurityContext { SELinuxOptions seLinuxOptions = 1; WindowsSecurityContextOptions windowsOptions = 8;
  *int64 runAsUser = 2; *int64 runAsGroup = 6; *bool runAsNonRoot = 3; repeated int64 supplementalGroups = 4;
  *string supplementalGroupsPolicy = 12; *int64 fsGroup = 5; repeated Sysctl sysctls = 7;
  *string fsGroupChangePolicy = 9; SeccompProfile seccompProfile = 10; AppArmorProfile appArmorProfile = 11;
  *string seLinuxChangePolicy = 13; }
message PodSpec { repeated Volume volumes = 1; repeated Container initContainers = 20;
  repeated Container containers = 2; repeated EphemeralContainer ephemeralContainers = 34; string restartPolicy = 3;
  *int64 terminationGracePeriodSeconds = 4; *int64 activeDeadlineSeconds = 5; string dnsPolicy = 6;
  map<string, string> nodeSelector = 7; string serviceAccountName = 8; string serviceAccount = 9;
  *bool automountServiceAccountToken = 21; string nodeName = 10; bool hostNetwork = 11; bool hostPID = 12;
  bool hostIPC = 13; *bool shareProcessNamespace = 27; PodSecurityContext securityContext = 14;
  repeated LocalObjectReference imagePullSecrets = 15; string hostname = 16; string subdomain = 17;
  Affinity affinity = 18; string schedulerName = 19; repeated Toleration tolerations = 22;
  repeated HostAlias hostAliases = 23; string priorityClassName = 24; *int32 priority = 25;
  PodDNSConfig dnsConfig = 26; repeated PodReadinessGate readinessGates = 28; *string runtimeClassName = 29;
  *bool enableServiceLinks = 30; *string preemptionPolicy = 31; map<string, resource.Quantity> overhead = 32;
  repeated TopologySpreadConstraint topologySpreadConstraints = 33; *bool setHostnameAsFQDN = 35; PodOS os = 36;
  *bool hostUsers = 37; repeated PodSchedulingGate schedulingGates = 38;
  repeated PodResourceClaim resourceClaims = 39; ResourceRequirements resources = 40; *string hostnameOverride = 41;
  PodSchedulingGroup schedulingGroup = 43; repeated EvictionResponder evictionResponders = 44; }
message PodStatus { int64 observedGeneration = 17; string phase = 1; repeated PodCondition conditions = 2;
  string message = 3; string reason = 4; string nominatedNodeName = 11; string hostIP = 5;
  repeated HostIP hostIPs = 16; string podIP = 6; repeated PodIP podIPs = 12; meta.Time startTime = 7;
  repeated ContainerStatus initContainerStatuses = 10; repeated ContainerStatus containerStatuses = 8;
  string qosClass = 9; repeated ContainerStatus ephemeralContainerStatuses = 13; string resize = 14;
  repeated PodResourceClaimStatus resourceClaimStatuses = 15;
  PodExtendedResourceClaimStatus extendedResourceClaimStatus = 18;
  map<string, resource.Quantity> allocatedResources = 19; ResourceRequirements resources = 20;
  repeated NodeAllocatableResourceClaimStatus nodeAllocatableResourceClaimStatuses = 21;
  repeated PodVolumeHealth volumeHealth = 22; }
message PodTemplate { meta.ObjectMeta metadata = 1; PodTemplateSpec template = 2; }
message PodTemplateSpec { meta.ObjectMeta metadata = 1; PodSpec spec = 2; }
message PodVolumeHealth { *string name = 1; repeated VolumeHealthCondition healthConditions = 2;
  meta.Time lastTransitionTime = 3; }
message PortStatus { *int32 port = 1; *string protocol = 2; *string error = 3; }
message PortworxVolumeSource { *string volumeID = 1; string fsType = 2; bool readOnly = 3; }
message PreferredSchedulingTerm { *int32 weight = 1; NodeSelectorTerm preference = 2; }
message Probe { inline ProbeHandler handler = 1; int32 initialDelaySeconds = 2; int32 timeoutSeconds = 3;
  int32 periodSeconds = 4; int32 successThreshold = 5; int32 failureThreshold = 6;
  *int64 terminationGracePeriodSeconds = 7; }
message ProbeHandler { ExecAction exec = 1; HTTPGetAction httpGet = 2; TCPSocketAction tcpSocket = 3;
  GRPCAction grpc = 4; }
message ProjectedVolumeSource { repeated VolumeProjection sources = 1; *int32 defaultMode = 2;
  *int64 defaultUser = 3; }
message QuobyteVolumeSource { *string registry = 1; *string volume = 2; bool readOnly = 3; string user = 4;
  string group = 5; string tenant = 6; }
message RBDPersistentVolumeSource { repeated string monitors = 1; *string image = 2; string fsType = 3;
  string pool = 4; string user = 5; string keyring = 6; SecretReference secretRef = 7; bool readOnly = 8; }
message RBDVolumeSource { repeated string monitors = 1; *string image = 2; string fsType = 3; string pool = 4;
  string user = 5; string keyring = 6; LocalObjectReference secretRef = 7; bool readOnly = 8; }
message ReplicationController { meta.ObjectMeta metadata = 1; ReplicationControllerSpec spec = 2;
  ReplicationControllerStatus status = 3; }
message ReplicationControllerCondition { *string type = 1; *string status = 2; meta.Time lastTransitionTime = 3;
  string reason = 4; string message = 5; }
message ReplicationControllerSpec { *int32 replicas = 1; int32 minReadySeconds = 4;
  map<string, string> selector = 2; PodTemplateSpec template = 3; }
message ReplicationControllerStatus { *int32 replicas = 1; int32 fullyLabeledReplicas = 2; int32 readyReplicas = 4;
  int32 availableReplicas = 5; int64 observedGeneration = 3;
  repeated ReplicationControllerCondition conditions = 6; }
message ResourceClaim { *string name = 1; string request = 2; }
message ResourceFieldSelector { string containerName = 1; *string resource = 2; resource.Quantity divisor = 3; }
message ResourceHealth { *string resourceID = 1; string health = 2; *string message = 6; }
message ResourceQuota { meta.ObjectMeta metadata = 1; ResourceQuotaSpec spec = 2; ResourceQuotaStatus status = 3; }
message ResourceQuotaSpec { map<string, resource.Quantity> hard = 1; repeated string scopes = 2;
  ScopeSelector scopeSelector = 3; }
message ResourceQuotaStatus { map<string, resource.Quantity> hard = 1; map<string, resource.Quantity> used = 2; }
message ResourceRequirements { map<string, resource.Quantity> limits = 1;
  map<string, resource.Quantity> requests = 2; repeated ResourceClaim claims = 3; }
message ResourceStatus { *string name = 1; repeated ResourceHealth resources = 2; }
message SELinuxOptions { string user = 1; string role = 2; string type = 3; string level = 4; }
message ScaleIOPersistentVolumeSource { *string gateway = 1; *string system = 2; SecretReference secretRef = 3;
  bool sslEnabled = 4; string protectionDomain = 5; string storagePool = 6; string storageMode = 7;
  string volumeName = 8; string fsType = 9; bool readOnly = 10; }
message ScaleIOVolumeSource { *string gateway = 1; *string system = 2; LocalObjectReference secretRef = 3;
  bool sslEnabled = 4; string protectionDomain = 5; string storagePool = 6; string storageMode = 7;
  string volumeName = 8; string fsType = 9; bool readOnly = 10; }
message ScopeSelector { repeated ScopedResourceSelectorRequirement matchExpressions = 1; }
message ScopedResourceSelectorRequirement { *string scopeName = 1; *string operator = 2;
  repeated string values = 3; }
message SeccompProfile { *string type = 1; *string localhostProfile = 2; }
message Secret { meta.ObjectMeta metadata = 1; *bool immutable = 5; map<string, bytes> data = 2;
  map<string, string> stringData = 4; string type = 3; }
message SecretEnvSource { inline LocalObjectReference localObjectReference = 1; *bool optional = 2; }
message SecretKeySelector { inline LocalObjectReference localObjectReference = 1; *string key = 2;
  *bool optional = 3; }
message SecretProjection { inline LocalObjectReference localObjectReference = 1; repeated KeyToPath items = 2;
  *bool optional = 4; }
message SecretReference { string name = 1; string namespace = 2; }
message SecretVolumeSource { string secretName = 1; repeated KeyToPath items = 2; *int32 defaultMode = 3;
  *bool optional = 4; *int64 defaultUser = 5; }
message SecurityContext { Capabilities capabilities = 1; *bool privileged = 2; SELinuxOptions seLinuxOptions = 3;
  WindowsSecurityContextOptions windowsOptions = 10; *int64 runAsUser = 4; *int64 runAsGroup = 8;
  *bool runAsNonRoot = 5; *bool readOnlyRootFilesystem = 6; *bool allowPrivilegeEscalation = 7;
  *string procMount = 9; SeccompProfile seccompProfile = 11; AppArmorProfile appArmorProfile = 12; }
message Service { meta.ObjectMeta metadata = 1; ServiceSpec spec = 2; ServiceStatus status = 3; }
message ServiceAccount { meta.ObjectMeta metadata = 1; repeated ObjectReference secrets = 2;
  repeated LocalObjectReference imagePullSecrets = 3; *bool automountServiceAccountToken = 4; }
message ServiceAccountTokenProjection { string audience = 1; *int64 expirationSeconds = 2; *string path = 3;
  *int64 user = 4; }
message ServicePort { string name = 1; string protocol = 2; *string appProtocol = 6; *int32 port = 3;
  intstr.IntOrString targetPort = 4; int32 nodePort = 5; }
message ServiceSpec { repeated ServicePort ports = 1; map<string, string> selector = 2; string clusterIP = 3;
  repeated string clusterIPs = 18; string type = 4; repeated string externalIPs = 5; string sessionAffinity = 7;
  string loadBalancerIP = 8; repeated string loadBalancerSourceRanges = 9; string externalName = 10;
  string externalTrafficPolicy = 11; int32 healthCheckNodePort = 12; bool publishNotReadyAddresses = 13;
  SessionAffinityConfig sessionAffinityConfig = 14; repeated string ipFamilies = 19; *string ipFamilyPolicy = 17;
  *bool allocateLoadBalancerNodePorts = 20; *string loadBalancerClass = 21; *string internalTrafficPolicy = 22;
  *string trafficDistribution = 23; }
message ServiceStatus { LoadBalancerStatus loadBalancer = 1; repeated meta.Condition conditions = 2; }
message SessionAffinityConfig { ClientIPConfig clientIP = 1; }
message SleepAction { *int64 seconds = 1; }
message StorageOSPersistentVolumeSource { string volumeName = 1; string volumeNamespace = 2; string fsType = 3;
  bool readOnly = 4; ObjectReference secretRef = 5; }
message StorageOSVolumeSource { string volumeName = 1; string volumeNamespace = 2; string fsType = 3;
  bool readOnly = 4; LocalObjectReference secretRef = 5; }
message Sysctl { *string name = 1; *string value = 2; }
message TCPSocketAction { intstr.IntOrString port = 1; string host = 2; }
message Taint { *string key = 1; string value = 2; *string effect = 3; meta.Time timeAdded = 4; }
message Toleration { string key = 1; string operator = 2; string value = 3; string effect = 4;
  *int64 tolerationSeconds = 5; }
message TopologySelectorLabelRequirement { *string key = 1; repeated string values = 2; }
message TopologySelectorTerm { repeated TopologySelectorLabelRequirement matchLabelExpressions = 1; }
message TopologySpreadConstraint { *int32 maxSkew = 1; *string topologyKey = 2; *string whenUnsatisfiable = 3;
  meta.LabelSelector labelSelector = 4; *int32 minDomains = 5; *string nodeAffinityPolicy = 6;
  *string nodeTaintsPolicy = 7; repeated string matchLabelKeys = 8; }
message TypedLocalObjectReference { *string apiGroup = 1; *string kind = 2; *string name = 3; }
message TypedObjectReference { *string apiGroup = 1; *string kind = 2; *string name = 3; *string namespace = 4; }
message Volume { *string name = 1; inline VolumeSource volumeSource = 2; }
message VolumeDevice { *string name = 1; *string devicePath = 2; }
message VolumeHealthCondition { *string status = 1; *string reason = 2; string message = 3; }
message VolumeHealthStatus { repeated VolumeHealthCondition healthConditions = 1;
  meta.Time lastTransitionTime = 2; }
message VolumeMount { *string name = 1; bool readOnly = 2; *string recursiveReadOnly = 7; *string mountPath = 3;
  string subPath = 4; *string mountPropagation = 5; string subPathExpr = 6; repeated string bindMountOptions = 8; }
message VolumeMountStatus { *string name = 1; *string mountPath = 2; bool readOnly = 3;
  *string recursiveReadOnly = 4; VolumeStatus volumeStatus = 5; }
message VolumeNodeAffinity { NodeSelector required = 1; }
message VolumeProjection { SecretProjection secret = 1; DownwardAPIProjection downwardAPI = 2;
  ConfigMapProjection configMap = 3; ServiceAccountTokenProjection serviceAccountToken = 4;
  ClusterTrustBundleProjection clusterTrustBundle = 5; PodCertificateProjection podCertificate = 6; }
message VolumeResourceRequirements { map<string, resource.Quantity> limits = 1;
  map<string, resource.Quantity> requests = 2; }
message VolumeSource { HostPathVolumeSource hostPath = 1; EmptyDirVolumeSource emptyDir = 2;
  GCEPersistentDiskVolumeSource gcePersistentDisk = 3; AWSElasticBlockStoreVolumeSource awsElasticBlockStore = 4;
  GitRepoVolumeSource gitRepo = 5; SecretVolumeSource secret = 6; NFSVolumeSource nfs = 7;
  ISCSIVolumeSource iscsi = 8; GlusterfsVolumeSource glusterfs = 9;
  PersistentVolumeClaimVolumeSource persistentVolumeClaim = 10; RBDVolumeSource rbd = 11;
  FlexVolumeSource flexVolume = 12; CinderVolumeSource cinder = 13; CephFSVolumeSource cephfs = 14;
  FlockerVolumeSource flocker = 15; DownwardAPIVolumeSource downwardAPI = 16; FCVolumeSource fc = 17;
  AzureFileVolumeSource azureFile = 18; ConfigMapVolumeSource configMap = 19;
  VsphereVirtualDiskVolumeSource vsphereVolume = 20; QuobyteVolumeSource quobyte = 21;
  AzureDiskVolumeSource azureDisk = 22; PhotonPersistentDiskVolumeSource photonPersistentDisk = 23;
  ProjectedVolumeSource projected = 26; PortworxVolumeSource portworxVolume = 24; ScaleIOVolumeSource scaleIO = 25;
  StorageOSVolumeSource storageos = 27; CSIVolumeSource csi = 28; EphemeralVolumeSource ephemeral = 29;
  ImageVolumeSource image = 30; }
message VolumeStatus { ImageVolumeStatus image = 1; }
message VsphereVirtualDiskVolumeSource { *string volumePath = 1; string fsType = 2; string storagePolicyName = 3;
  string storagePolicyID = 4; }
message WeightedPodAffinityTerm { *int32 weight = 1; PodAffinityTerm podAffinityTerm = 2; }
message WindowsSecurityContextOptions { *string gmsaCredentialSpecName = 1; *string gmsaCredentialSpec = 2;
  *string runAsUserName = 3; *bool hostProcess = 4; }
""",
    "apps": """
message ControllerRevision { meta.ObjectMeta metadata = 1; runtime.RawExtension data = 2; *int64 revision = 3; }
message DaemonSet { meta.ObjectMeta metadata = 1; DaemonSetSpec spec = 2; DaemonSetStatus status = 3; }
message DaemonSetCondition { *string type = 1; *string status = 2; meta.Time lastTransitionTime = 3;
  string reason = 4; string message = 5; }
message DaemonSetSpec { meta.LabelSelector selector = 1; core.PodTemplateSpec template = 2;
  DaemonSetUpdateStrategy updateStrategy = 3; int32 minReadySeconds = 4; *int32 revisionHistoryLimit = 6; }
message DaemonSetStatus { *int32 currentNumberScheduled = 1; *int32 numberMisscheduled = 2;
  *int32 desiredNumberScheduled = 3; *int32 numberReady = 4; int64 observedGeneration = 5;
  int32 updatedNumberScheduled = 6; int32 numberAvailable = 7; int32 numberUnavailable = 8;
  *int32 collisionCount = 9; repeated DaemonSetCondition conditions = 10; }
message DaemonSetUpdateStrategy { string type = 1; RollingUpdateDaemonSet rollingUpdate = 2; }
message Deployment { meta.ObjectMeta metadata = 1; DeploymentSpec spec = 2; DeploymentStatus status = 3; }
message DeploymentCondition { *string type = 1; *string status = 2; meta.Time lastUpdateTime = 6;
  meta.Time lastTransitionTime = 7; string reason = 4; string message = 5; }
message DeploymentSpec { *int32 replicas = 1; meta.LabelSelector selector = 2; core.PodTemplateSpec template = 3;
  DeploymentStrategy strategy = 4; int32 minReadySeconds = 5; *int32 revisionHistoryLimit = 6; bool paused = 7;
  *int32 progressDeadlineSeconds = 9; }
message DeploymentStatus { int64 observedGeneration = 1; int32 replicas = 2; int32 updatedReplicas = 3;
  int32 readyReplicas = 7; int32 availableReplicas = 4; int32 unavailableReplicas = 5;
  *int32 terminatingReplicas = 9; repeated DeploymentCondition conditions = 6; *int32 collisionCount = 8; }
message DeploymentStrategy { string type = 1; RollingUpdateDeployment rollingUpdate = 2; }
message ReplicaSet { meta.ObjectMeta metadata = 1; ReplicaSetSpec spec = 2; ReplicaSetStatus status = 3; }
message ReplicaSetCondition { *string type = 1; *string status = 2; meta.Time lastTransitionTime = 3;
  string reason = 4; string message = 5; }
message ReplicaSetSpec { *int32 replicas = 1; int32 minReadySeconds = 4; meta.LabelSelector selector = 2;
  core.PodTemplateSpec template = 3; }
message ReplicaSetStatus { *int32 replicas = 1; int32 fullyLabeledReplicas = 2; int32 readyReplicas = 4;
  int32 availableReplicas = 5; *int32 terminatingReplicas = 7; int64 observedGeneration = 3;
  repeated ReplicaSetCondition conditions = 6; }
message RollingUpdateDaemonSet { intstr.IntOrString maxUnavailable = 1; intstr.IntOrString maxSurge = 2; }
message RollingUpdateDeployment { intstr.IntOrString maxUnavailable = 1; intstr.IntOrString maxSurge = 2; }
message RollingUpdateStatefulSetStrategy { *int32 partition = 1; intstr.IntOrString maxUnavailable = 2; }
message StatefulSet { meta.ObjectMeta metadata = 1; StatefulSetSpec spec = 2; StatefulSetStatus status = 3; }
message StatefulSetCondition { *string type = 1; *string status = 2; meta.Time lastTransitionTime = 3;
  string reason = 4; string message = 5; }
message StatefulSetOrdinals { *int32 start = 1; }
message StatefulSetPersistentVolumeClaimRetentionPolicy { string whenDeleted = 1; string whenScaled = 2; }
message StatefulSetSpec { *int32 replicas = 1; meta.LabelSelector selector = 2; core.PodTemplateSpec template = 3;
  repeated core.PersistentVolumeClaim volumeClaimTemplates = 4; *string serviceName = 5;
  string podManagementPolicy = 6; StatefulSetUpdateStrategy updateStrategy = 7; *int32 revisionHistoryLimit = 8;
  int32 minReadySeconds = 9;
  StatefulSetPersistentVolumeClaimRetentionPolicy persistentVolumeClaimRetentionPolicy = 10;
  StatefulSetOrdinals ordinals = 11; }
message StatefulSetStatus { int64 observedGeneration = 1; *int32 replicas = 2; int32 readyReplicas = 3;
  int32 currentReplicas = 4; int32 updatedReplicas = 5; string currentRevision = 6; string updateRevision = 7;
  *int32 collisionCount = 9; repeated StatefulSetCondition conditions = 10; *int32 availableReplicas = 11; }
message StatefulSetUpdateStrategy { string type = 1; RollingUpdateStatefulSetStrategy rollingUpdate = 2; }
""",
    "batch": """
message CronJob { meta.ObjectMeta metadata = 1; CronJobSpec spec = 2; CronJobStatus status = 3; }
message CronJobSpec { *string schedule = 1; *string timeZone = 8; *int64 startingDeadlineSeconds = 2;
  string concurrencyPolicy = 3; *bool suspend = 4; JobTemplateSpec jobTemplate = 5;
  *int32 successfulJobsHistoryLimit = 6; *int32 failedJobsHistoryLimit = 7; }
message CronJobStatus { repeated core.ObjectReference active = 1; meta.Time lastScheduleTime = 4;
  meta.Time lastSuccessfulTime = 5; }
message Job { meta.ObjectMeta metadata = 1; JobSpec spec = 2; JobStatus status = 3; }
message JobCondition { *string type = 1; *string status = 2; meta.Time lastProbeTime = 3;
  meta.Time lastTransitionTime = 4; string reason = 5; string message = 6; }
message JobSpec { *int32 parallelism = 1; *int32 completions = 2; *int64 activeDeadlineSeconds = 3;
  PodFailurePolicy podFailurePolicy = 11; SuccessPolicy successPolicy = 16; *int32 backoffLimit = 7;
  *int32 backoffLimitPerIndex = 12; *int32 maxFailedIndexes = 13; meta.LabelSelector selector = 4;
  *bool manualSelector = 5; core.PodTemplateSpec template = 6; *int32 ttlSecondsAfterFinished = 8;
  *string completionMode = 9; *bool suspend = 10; *string podReplacementPolicy = 14; *string managedBy = 15; }
message JobStatus { repeated JobCondition conditions = 1; meta.Time startTime = 2; meta.Time completionTime = 3;
  int32 active = 4; int32 succeeded = 5; int32 failed = 6; *int32 terminating = 11; string completedIndexes = 7;
  *string failedIndexes = 10; UncountedTerminatedPods uncountedTerminatedPods = 8; *int32 ready = 9; }
message JobTemplateSpec { meta.ObjectMeta metadata = 1; JobSpec spec = 2; }
message PodFailurePolicy { repeated PodFailurePolicyRule rules = 1; }
message PodFailurePolicyOnExitCodesRequirement { *string containerName = 1; *string operator = 2;
  repeated int32 values = 3; }
message PodFailurePolicyOnPodConditionsPattern { *string type = 1; *string status = 2; }
message PodFailurePolicyRule { *string action = 1; PodFailurePolicyOnExitCodesRequirement onExitCodes = 2;
  repeated PodFailurePolicyOnPodConditionsPattern onPodConditions = 3; }
message SuccessPolicy { repeated SuccessPolicyRule rules = 1; }
message SuccessPolicyRule { *string succeededIndexes = 1; *int32 succeededCount = 2; }
message UncountedTerminatedPods { repeated string succeeded = 1; repeated string failed = 2; }
""",
    "rbac": """
message AggregationRule { repeated meta.LabelSelector clusterRoleSelectors = 1; }
message ClusterRole { meta.ObjectMeta metadata = 1; repeated PolicyRule rules = 2;
  AggregationRule aggregationRule = 3; }
message ClusterRoleBinding { meta.ObjectMeta metadata = 1; repeated Subject subjects = 2; RoleRef roleRef = 3; }
message PolicyRule { repeated string verbs = 1; repeated string apiGroups = 2; repeated string resources = 3;
  repeated string resourceNames = 4; repeated string nonResourceURLs = 5; }
message Role { meta.ObjectMeta metadata = 1; repeated PolicyRule rules = 2; }
message RoleBinding { meta.ObjectMeta metadata = 1; repeated Subject subjects = 2; RoleRef roleRef = 3; }
message RoleRef { *string apiGroup = 1; *string kind = 2; *string name = 3; }
message Subject { *string kind = 1; string apiGroup = 2; *string name = 3; string namespace = 4; }
""",
    "scheduling": """
message PriorityClass { meta.ObjectMeta metadata = 1; *int32 value = 2; bool globalDefault = 3;
  string description = 4; *string preemptionPolicy = 5; }
""",
    "policy": """
message Eviction { meta.ObjectMeta metadata = 1; meta.DeleteOptions deleteOptions = 2; }
message PodDisruptionBudget { meta.ObjectMeta metadata = 1; PodDisruptionBudgetSpec spec = 2;
  PodDisruptionBudgetStatus status = 3; }
message PodDisruptionBudgetSpec { intstr.IntOrString minAvailable = 1; meta.LabelSelector selector = 2;
  intstr.IntOrString maxUnavailable = 3; *string unhealthyPodEvictionPolicy = 4; }
message PodDisruptionBudgetStatus { int64 observedGeneration = 1; map<string, meta.Time> disruptedPods = 2;
  *int32 disruptionsAllowed = 3; *int32 currentHealthy = 4; *int32 desiredHealthy = 5; *int32 expectedPods = 6;
  repeated meta.Condition conditions = 7; }
""",
    "networking": """
message HTTPIngressPath { string path = 1; *string pathType = 3; IngressBackend backend = 2; }
message HTTPIngressRuleValue { repeated HTTPIngressPath paths = 1; }
message IPBlock { *string cidr = 1; repeated string except = 2; }
message Ingress { meta.ObjectMeta metadata = 1; IngressSpec spec = 2; IngressStatus status = 3; }
message IngressBackend { IngressServiceBackend service = 4; core.TypedLocalObjectReference resource = 3; }
message IngressClass { meta.ObjectMeta metadata = 1; IngressClassSpec spec = 2; }
message IngressClassParametersReference { *string apiGroup = 1; *string kind = 2; *string name = 3;
  *string scope = 4; *string namespace = 5; }
message IngressClassSpec { string controller = 1; IngressClassParametersReference parameters = 2; }
message IngressLoadBalancerIngress { string ip = 1; string hostname = 2; repeated IngressPortStatus ports = 4; }
message IngressLoadBalancerStatus { repeated IngressLoadBalancerIngress ingress = 1; }
message IngressPortStatus { *int32 port = 1; *string protocol = 2; *string error = 3; }
message IngressRule { string host = 1; inline IngressRuleValue ingressRuleValue = 2; }
message IngressRuleValue { HTTPIngressRuleValue http = 1; }
message IngressServiceBackend { *string name = 1; ServiceBackendPort port = 2; }
message IngressSpec { *string ingressClassName = 4; IngressBackend defaultBackend = 1; repeated IngressTLS tls = 2;
  repeated IngressRule rules = 3; }
message IngressStatus { IngressLoadBalancerStatus loadBalancer = 1; }
message IngressTLS { repeated string hosts = 1; string secretName = 2; }
message NetworkPolicy { meta.ObjectMeta metadata = 1; NetworkPolicySpec spec = 2; }
message NetworkPolicyEgressRule { repeated NetworkPolicyPort ports = 1; repeated NetworkPolicyPeer to = 2; }
message NetworkPolicyIngressRule { repeated NetworkPolicyPort ports = 1; repeated NetworkPolicyPeer from = 2; }
message NetworkPolicyPeer { meta.LabelSelector podSelector = 1; meta.LabelSelector namespaceSelector = 2;
  IPBlock ipBlock = 3; }
message NetworkPolicyPort { *string protocol = 1; intstr.IntOrString port = 2; *int32 endPort = 3; }
message NetworkPolicySpec { meta.LabelSelector podSelector = 1; repeated NetworkPolicyIngressRule ingress = 2;
  repeated NetworkPolicyEgressRule egress = 3; repeated string policyTypes = 4; }
message ServiceBackendPort { string name = 1; int32 number = 2; }
""",
    "autoscaling": """
message CrossVersionObjectReference { *string kind = 1; *string name = 2; string apiVersion = 3; }
message HorizontalPodAutoscaler { meta.ObjectMeta metadata = 1; HorizontalPodAutoscalerSpec spec = 2;
  HorizontalPodAutoscalerStatus status = 3; }
message HorizontalPodAutoscalerSpec { CrossVersionObjectReference scaleTargetRef = 1; *int32 minReplicas = 2;
  *int32 maxReplicas = 3; *int32 targetCPUUtilizationPercentage = 4; }
message HorizontalPodAutoscalerStatus { *int64 observedGeneration = 1; meta.Time lastScaleTime = 2;
  *int32 currentReplicas = 3; *int32 desiredReplicas = 4; *int32 currentCPUUtilizationPercentage = 5; }
message Scale { meta.ObjectMeta metadata = 1; ScaleSpec spec = 2; ScaleStatus status = 3; }
message ScaleSpec { int32 replicas = 1; }
message ScaleStatus { *int32 replicas = 1; string selector = 2; }
""",
    "authentication": """
message BoundObjectReference { string kind = 1; string apiVersion = 2; string name = 3; string uid = 4; }
message TokenRequest { meta.ObjectMeta metadata = 1; TokenRequestSpec spec = 2; TokenRequestStatus status = 3; }
message TokenRequestSpec { repeated string audiences = 1; *int64 expirationSeconds = 4;
  BoundObjectReference boundObjectRef = 3; }
message TokenRequestStatus { *string token = 1; meta.Time expirationTimestamp = 2; }
""",
    "coordination": """
message Lease { meta.ObjectMeta metadata = 1; LeaseSpec spec = 2; }
message LeaseSpec { *string holderIdentity = 1; *int32 leaseDurationSeconds = 2; meta.MicroTime acquireTime = 3;
  meta.MicroTime renewTime = 4; *int32 leaseTransitions = 5; *string strategy = 6; *string preferredHolder = 7; }
""",
    "discovery": """
message Endpoint { repeated string addresses = 1; EndpointConditions conditions = 2; *string hostname = 3;
  core.ObjectReference targetRef = 4; map<string, string> deprecatedTopology = 5; *string nodeName = 6;
  *string zone = 7; EndpointHints hints = 8; }
message EndpointConditions { *bool ready = 1; *bool serving = 2; *bool terminating = 3; }
message EndpointHints { repeated ForZone forZones = 1; repeated ForNode forNodes = 2; }
message EndpointPort { *string name = 1; *string protocol = 2; *int32 port = 3; *string appProtocol = 4; }
message EndpointSlice { meta.ObjectMeta metadata = 1; *string addressType = 4; repeated Endpoint endpoints = 2;
  repeated EndpointPort ports = 3; }
message ForNode { *string name = 1; }
message ForZone { *string name = 1; }
""",
    "events": """
message Event { meta.ObjectMeta metadata = 1; meta.MicroTime eventTime = 2; EventSeries series = 3;
  string reportingController = 4; string reportingInstance = 5; string action = 6; string reason = 7;
  core.ObjectReference regarding = 8; core.ObjectReference related = 9; string note = 10; string type = 11;
  core.EventSource deprecatedSource = 12; meta.Time deprecatedFirstTimestamp = 13;
  meta.Time deprecatedLastTimestamp = 14; int32 deprecatedCount = 15; }
message EventSeries { *int32 count = 1; meta.MicroTime lastObservedTime = 2; }
""",
    "certificates": """
message CertificateSigningRequest { meta.ObjectMeta metadata = 1; CertificateSigningRequestSpec spec = 2;
  CertificateSigningRequestStatus status = 3; }
message CertificateSigningRequestCondition { *string type = 1; *string status = 6; string reason = 2;
  string message = 3; meta.Time lastUpdateTime = 4; meta.Time lastTransitionTime = 5; }
message CertificateSigningRequestSpec { *bytes request = 1; *string signerName = 7; *int32 expirationSeconds = 8;
  repeated string usages = 5; string username = 2; string uid = 3; repeated string groups = 4;
  map<string, ExtraValue> extra = 6; }
message CertificateSigningRequestStatus { repeated CertificateSigningRequestCondition conditions = 1;
  bytes certificate = 2; }
message ExtraValue { repeated string items = 1; }
""",
    "storage": """
message CSIDriver { meta.ObjectMeta metadata = 1; CSIDriverSpec spec = 2; }
message CSIDriverSpec { *bool attachRequired = 1; *bool podInfoOnMount = 2;
  repeated string volumeLifecycleModes = 3; *bool storageCapacity = 4; *string fsGroupPolicy = 5;
  repeated TokenRequest tokenRequests = 6; *bool requiresRepublish = 7; *bool seLinuxMount = 8;
  *int64 nodeAllocatableUpdatePeriodSeconds = 9; *bool serviceAccountTokenInSecrets = 10;
  *bool preventPodSchedulingIfMissing = 11; }
message StorageClass { meta.ObjectMeta metadata = 1; *string provisioner = 2; map<string, string> parameters = 3;
  *string reclaimPolicy = 4; repeated string mountOptions = 5; *bool allowVolumeExpansion = 6;
  *string volumeBindingMode = 7; repeated core.TopologySelectorTerm allowedTopologies = 8; }
message TokenRequest { *string audience = 1; *int64 expirationSeconds = 2; }
message VolumeAttachment { meta.ObjectMeta metadata = 1; VolumeAttachmentSpec spec = 2;
  VolumeAttachmentStatus status = 3; }
message VolumeAttachmentSource { *string persistentVolumeName = 1; core.PersistentVolumeSpec inlineVolumeSpec = 2; }
message VolumeAttachmentSpec { *string attacher = 1; VolumeAttachmentSource source = 2; *string nodeName = 3; }
message VolumeAttachmentStatus { *bool attached = 1; map<string, string> attachmentMetadata = 2;
  VolumeError attachError = 3; VolumeError detachError = 4; }
message VolumeError { meta.Time time = 1; string message = 2; *int32 errorCode = 3; }
""",
    "node": """
message Overhead { map<string, resource.Quantity> podFixed = 1; }
message RuntimeClass { meta.ObjectMeta metadata = 1; *string handler = 2; Overhead overhead = 3;
  Scheduling scheduling = 4; }
message Scheduling { map<string, string> nodeSelector = 1; repeated core.Toleration tolerations = 2; }
""",
}

# API version of the envelope -> the alias of its messages.
GROUPS = {"v1": "core", "apps/v1": "apps", "batch/v1": "batch", "rbac.authorization.k8s.io/v1": "rbac",
          "scheduling.k8s.io/v1": "scheduling", "policy/v1": "policy", "networking.k8s.io/v1": "networking",
          "autoscaling/v1": "autoscaling", "coordination.k8s.io/v1": "coordination",
          "discovery.k8s.io/v1": "discovery", "events.k8s.io/v1": "events", "certificates.k8s.io/v1": "certificates",
          "storage.k8s.io/v1": "storage", "node.k8s.io/v1": "node", "authentication.k8s.io/v1": "authentication"}

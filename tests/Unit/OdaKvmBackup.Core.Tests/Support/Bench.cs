namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>
/// A running domain with two real disk files (a raw boot disk and a fully allocated raw data disk, each in its
/// own folder, as on ODA) behind a FakeHost, and the way to plan, begin and snapshot a run of it. Uses the
/// journal and the locks: only for classes in <see cref="StateDirectoryCollection"/>.
/// </summary>
internal sealed class Bench : IDisposable
{
    public const string Domain = "oda_vm1";
    public const string Snap = BackupNames.DefaultSnapshotName;
    private readonly List<BackupRun> _runs = new();

    /// <param name="dataSize">The data disk's size (6 MiB: within one 16 MiB segment of a remote copy's digests).</param>
    public Bench(long dataSize = 6L * Files.MiB)
    {
        Boot = Path.Combine(Temp.Folder("vm_oda_vm1"), "oda_vm1_boot");
        Data = Path.Combine(Temp.Folder("vdisk_data1"), "data1");
        Files.Image(Boot, 4L * Files.MiB, [(0, 4096), (Files.MiB + 100, 8192)]);
        Files.Image(Data, dataSize, [(2L * Files.MiB, 4096), (dataSize - 10, 10)], allocate: true, seed: 7);
        Host.ImageInfo[Boot] = TestDomain.ImageInfoJson(Boot, "raw", 4L * Files.MiB, Files.AllocatedBytes(Boot));
        Host.ImageInfo[Data] = TestDomain.ImageInfoJson(Data, "raw", dataSize, Files.AllocatedBytes(Data));
        Host.UseDisks(new TestDisk("vda", Boot, "raw"), new TestDisk("vdb", Data, "raw"));
    }

    public TempFolder Temp { get; } = new("bench");
    public FakeHost Host { get; } = new(Domain);
    public HostTools Tools => new(Host.Virsh, Host.QemuImg);
    public string Boot { get; }
    public string Data { get; }

    public static string OverlayOf(string source) => source + "." + Snap;

    public SnapshotRequest Request(params IPreflightCheck[] checks)
    {
        var disks = DomainXml.Parse(Host.LiveXml, Host.State).Disks;
        return new SnapshotRequest(Domain, disks, Snap, null, false, checks);
    }

    /// <summary>The preflight, which must find nothing wrong.</summary>
    public async Task<SnapshotPlan> PlanAsync(params IPreflightCheck[] checks)
    {
        var plan = await new SnapshotService(Tools).PlanAsync(Request(checks), CancellationToken.None);
        Assert.True(plan.Problems.Count == 0, "the preflight refused: " + string.Join("; ", plan.Problems.Select(p => p.Message)));
        return plan;
    }

    /// <summary>Takes the lock and writes the journal (phase Planned); no snapshot yet.</summary>
    public BackupRun Begin(SnapshotPlan plan)
    {
        var run = SnapshotService.Begin(plan, Tools);
        _runs.Add(run);
        return run;
    }

    /// <summary>A run whose disks write to their overlays, as New-KvmDiskSnapshot leaves it.</summary>
    public async Task<BackupRun> SnapshottedAsync()
    {
        var plan = await PlanAsync();
        var run = Begin(plan);
        await new SnapshotService(Tools).SnapshotAsync(run, plan, CancellationToken.None);
        return run;
    }

    /// <summary>Copies every disk of the run into the store and waits for the read-back checks, as Copy-VmDisk does.</summary>
    public async Task<IReadOnlyList<BackupException>> CopyAllAsync(BackupRun run, IBackupStore store, int throttleLimit = 2)
    {
        var copy = new CopyService(Tools, store, force: false, bandwidthMiBps: 0, throttleLimit, NullSink.Instance);
        copy.Start(run, CancellationToken.None);
        while (await copy.NextAsync(run) is not null)
        {
        }
        return await copy.FinishVerificationsAsync();
    }

    /// <summary>Repair-KvmBackup's engine on this host, its commits retried and polled in milliseconds.</summary>
    public RepairService Repair() => new(Tools,
        new CommitService(Host.Virsh, Host.QemuImg, NullSink.Instance)
        {
            FirstBackOff = TimeSpan.FromMilliseconds(1),
            MaxBackOff = TimeSpan.FromMilliseconds(4),
            PollInterval = TimeSpan.FromMilliseconds(5),
        },
        location => new LocalBackupStore(location));

    public static async Task<BackupManifest> ManifestAsync(IBackupStore store, BackupRun run) =>
        (await BackupSet.LoadAsync(store, BackupNames.SetFolder(run.DomainName, run.RunId), CancellationToken.None)).Manifest;

    public void Dispose()
    {
        foreach (var run in _runs)
        {
            try
            {
                run.Release();
            }
            catch (Exception ex) when (ex is IOException or BackupException)
            {
            }
        }
        Temp.Dispose();
    }
}

/// <summary>Keeps what an operation reported, for the tests that check what the user is told.</summary>
internal sealed class RecordingSink : IOperationSink
{
    public List<string> Verbose { get; } = new();
    public List<string> Warnings { get; } = new();
    public List<ProgressUpdate> Progress { get; } = new();

    void IOperationSink.Verbose(string message)
    {
        lock (Verbose)
            Verbose.Add(message);
    }

    void IOperationSink.Warning(string message)
    {
        lock (Warnings)
            Warnings.Add(message);
    }

    void IOperationSink.Progress(ProgressUpdate update)
    {
        lock (Progress)
            Progress.Add(update);
    }
}

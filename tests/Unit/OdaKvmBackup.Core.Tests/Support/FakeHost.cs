using System.Collections.Concurrent;
using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.QemuImg;

namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>
/// One libvirt domain as virsh and qemu-img would show it, answering through a <see cref="FakeRunner"/>.
/// The commands that change something (blockcommit, blockjob --pivot, define, qemu-img commit) call the
/// test's hooks, which change the state the next queries see.
/// </summary>
internal sealed class FakeHost
{
    public const string ReadyJob = " type=Active Block Commit\n bandwidth=0\n cur=12976128\n end=12976128\n\n";
    public const string RunningJob = " type=Active Block Commit\n bandwidth=2\n cur=6553600\n end=12976128\n\n";
    public const string NotReadyForPivot = "error: block copy still active: disk 'vda' not ready for pivot yet\n";

    public FakeHost(string domain)
    {
        Domain = domain;
        Runner = new FakeRunner(HandleAsync);
    }

    public string Domain { get; }
    public FakeRunner Runner { get; }
    public VirshClient Virsh => new(Runner);
    public QemuImgClient QemuImg => new(Runner);

    public string State { get; set; } = "running";
    public string LiveXml { get; set; } = "";
    public string InactiveXml { get; set; } = "";
    public List<string> Snapshots { get; } = new();
    /// <summary>Target -> stdout of `blockjob --info --raw` (no entry: no job, stdout "\n"). Concurrent: a virsh
    /// blockcommit that keeps running changes it while the code under test polls.</summary>
    public ConcurrentDictionary<string, string> BlockJobs { get; } = new(StringComparer.Ordinal);
    public ProcessResult AgentPing { get; set; } = Results.Ok("{\"return\":{}}\n\n");
    /// <summary>Path -> stdout of `qemu-img info --output=json -U path`.</summary>
    public Dictionary<string, string> ImageInfo { get; } = new(StringComparer.Ordinal);

    public Func<Invocation, ProcessResult>? OnBlockCommit { get; set; }
    /// <summary>A blockcommit that takes its time (used instead of <see cref="OnBlockCommit"/>): it gets the token
    /// that stops virsh, and should end cancelled when it fires, as a killed virsh does.</summary>
    public Func<Invocation, CancellationToken, Task<ProcessResult>>? OnBlockCommitAsync { get; set; }
    /// <summary>`blockjob --bandwidth N`; by default the job's bandwidth= line is set to N.</summary>
    public Func<Invocation, ProcessResult>? OnBandwidth { get; set; }
    /// <summary>`blockjob --abort`; by default the job ends and the disk stays on its overlay, as libvirt does.</summary>
    public Func<Invocation, ProcessResult>? OnAbort { get; set; }
    public Func<Invocation, ProcessResult>? OnPivot { get; set; }
    public Func<Invocation, ProcessResult>? OnDefine { get; set; }
    /// <summary>`virsh list` answered otherwise than from the domains here (null: as usual).</summary>
    public Func<Invocation, ProcessResult?>? OnList { get; set; }
    public Func<Invocation, ProcessResult>? OnQemuImgCommit { get; set; }
    /// <summary>`snapshot-create-as`; by default <see cref="TakeSnapshot"/> (needs <see cref="UseDisks(TestDisk[])"/>).</summary>
    public Func<Invocation, ProcessResult>? OnSnapshotCreate { get; set; }
    /// <summary>`snapshot-delete --metadata` answered otherwise than from <see cref="Snapshots"/> (null: as usual).</summary>
    public Func<Invocation, ProcessResult?>? OnSnapshotDelete { get; set; }

    /// <summary>Other domains of the host (name -> XML, live and saved alike; they run): their chains count for
    /// the checks that look at every domain.</summary>
    public Dictionary<string, string> OtherDomains { get; } = new(StringComparer.Ordinal);

    private List<TestDisk>? _disks;

    /// <summary>The disks as libvirt sees them now, when the test set them with <see cref="UseDisks(TestDisk[])"/>:
    /// snapshot-create-as and <see cref="CommitAndPivot"/> then change them (and both XMLs) as libvirt would.</summary>
    public IReadOnlyList<TestDisk> Disks => _disks ?? throw new InvalidOperationException("Call UseDisks first.");

    public void UseDisks(params TestDisk[] disks) => UseDisks("connected", disks);

    public void UseDisks(string? agentState, params TestDisk[] disks)
    {
        _disks = disks.ToList();
        _agentState = agentState;
        Render();
    }

    private string? _agentState = "connected";

    private void Render()
    {
        LiveXml = TestDomain.Xml(Domain, Disks, _agentState, live: true);
        InactiveXml = TestDomain.Xml(Domain, Disks, _agentState, live: false);
    }

    public TestDisk Disk(string target) => Disks.Single(d => d.Target == target);

    /// <summary>What libvirt does for `snapshot-create-as --disk-only`: each disk with snapshot=external gets its
    /// overlay (a new file on top of its current one, in the live and the saved definition), and the snapshot's
    /// metadata is recorded.</summary>
    public ProcessResult TakeSnapshot(Invocation call)
    {
        var name = call.ValueOf("--name")!;
        if (Snapshots.Contains(name))
            return Results.VirshError($"error: operation failed: domain moment {name} already exists\n");
        var specs = new List<(string Target, string File)>();
        for (var i = 0; i < call.Args.Count - 1; i++)
        {
            if (call.Args[i] != "--diskspec")
                continue;
            var spec = call.Args[i + 1];
            const string External = ",snapshot=external,file=";
            var at = spec.IndexOf(External, StringComparison.Ordinal);
            if (at > 0)
                specs.Add((spec[..at], spec[(at + External.Length)..].Replace(",,", ",", StringComparison.Ordinal)));
        }
        foreach (var (target, file) in specs)
        {
            if (File.Exists(file))
                return Results.VirshError($"error: unsupported configuration: external snapshot file for disk {target} already exists and is not a block device: {file}\n");
        }
        foreach (var (target, file) in specs)
        {
            var disk = Disk(target);
            File.WriteAllText(file, $"overlay of {disk.Source}");
            _disks![_disks.IndexOf(disk)] = disk with { Source = file, Format = "qcow2", Backing = disk.Source, BackingFormat = disk.Format };
        }
        Snapshots.Add(name);
        Render();
        return Results.Ok($"Domain snapshot {name} created\n\n");
    }

    /// <summary>A `blockcommit --active --pivot` that succeeds: the disk writes to the image below its overlay again.</summary>
    public ProcessResult CommitAndPivot(Invocation call)
    {
        var disk = Disk(call.ValueOf("--path")!);
        if (disk.Backing is null || call.ValueOf("--base") != disk.Backing)
            return Results.VirshError($"error: invalid argument: could not find base image in chain for '{disk.Target}'\n");
        _disks![_disks.IndexOf(disk)] = disk with { Source = disk.Backing, Format = disk.BackingFormat ?? "raw", Backing = null };
        Render();
        return Results.Ok("\nSuccessfully pivoted\n", "\rBlock commit: [100 %]");
    }

    private ProcessResult DeleteSnapshot(Invocation call)
    {
        if (!call.Has("--metadata"))
            throw new InvalidOperationException($"The fake host refuses a snapshot-delete that would touch files: {call}");
        var name = call.ValueOf("--snapshotname")!;
        return Snapshots.Remove(name)
            ? Results.Ok($"Domain snapshot {name} deleted\n\n")
            : Results.VirshError($"error: Domain snapshot not found: no domain snapshot with matching name '{name}'\n");
    }

    private ProcessResult ListDomains(Invocation call)
    {
        var names = new List<string>();
        if (call.Has("--all") || State is not ("shut off" or "crashed"))
            names.Add(Domain);
        names.AddRange(OtherDomains.Keys);
        return Results.Ok(string.Concat(names.Select(n => n + "\n")) + "\n");
    }

    private ProcessResult OtherDomain(Invocation call, string xml) => call.Command switch
    {
        "domstate" => Results.Ok("running\n\n"),
        "dumpxml" => Results.Ok(xml),
        "snapshot-list" => Results.Ok("\n"),
        "blockjob" when call.Has("--info") => Results.Ok("\n"),
        _ => throw new InvalidOperationException($"The fake host does not change other domains: {call}"),
    };

    public IReadOnlyList<Invocation> Calls => Runner.Calls;

    public int Count(Func<Invocation, bool> predicate) => Runner.Calls.Count(predicate);

    /// <summary>`blockjob --info --raw` of an active commit that has copied <paramref name="current"/> of <paramref name="end"/>.</summary>
    public static string CommitJob(long current, long end, long bandwidthMiBps = 0) =>
        $" type=Active Block Commit\n bandwidth={bandwidthMiBps}\n cur={current}\n end={end}\n\n";

    /// <summary>A virsh that keeps running until it is stopped (then ends cancelled, as a killed process), bounded
    /// so that a test whose code never stops it fails instead of hanging.</summary>
    public static async Task<ProcessResult> RunsUntilStopped(CancellationToken stop)
    {
        await Task.Delay(TimeSpan.FromSeconds(30), stop).ConfigureAwait(false);
        return Results.VirshError("error: the fake virsh was never stopped\n");
    }

    private static readonly string NoJob = "error: invalid argument: disk {0} does not have an active block job\n";

    private Task<ProcessResult> HandleAsync(Invocation call, CancellationToken ct) =>
        call.Is("virsh", "blockcommit") && OnBlockCommitAsync is { } running && call.ValueOf("--domain") == Domain
            ? running(call, ct)
            : Task.FromResult(Handle(call));

    private ProcessResult Handle(Invocation call)
    {
        if (call.Program == "qemu-img")
        {
            return call.Command switch
            {
                "info" => ImageInfo.TryGetValue(call.Args[^1], out var json)
                    ? Results.Ok(json)
                    : new ProcessResult(1, "", $"qemu-img: Could not open '{call.Args[^1]}': Could not open '{call.Args[^1]}': No such file or directory\n", TimeSpan.Zero),
                "commit" => OnQemuImgCommit?.Invoke(call) ?? Results.Ok("Image committed.\n"),
                _ => throw new InvalidOperationException($"The fake host does not know: {call}"),
            };
        }
        if (call.Program != "virsh")
            throw new InvalidOperationException($"The fake host does not know: {call}");
        if (call.Command == "define")
            return OnDefine?.Invoke(call) ?? Results.Ok($"Domain '{Domain}' defined from {call.ValueOf("--file")}\n\n");
        if (call.Command == "list")
            return OnList?.Invoke(call) ?? ListDomains(call);
        var domain = call.ValueOf("--domain");
        if (domain is not null && OtherDomains.TryGetValue(domain, out var other))
            return OtherDomain(call, other);
        if (domain != Domain)
            return Results.VirshError($"error: failed to get domain '{domain}'\n");
        return call.Command switch
        {
            "domstate" => Results.Ok(State + "\n\n"),
            "dumpxml" => Results.Ok(call.Has("--inactive") ? InactiveXml : LiveXml),
            "snapshot-list" => Results.Ok(string.Concat(Snapshots.Select(s => s + "\n")) + "\n"),
            "qemu-agent-command" => AgentPing,
            "snapshot-create-as" => OnSnapshotCreate?.Invoke(call) ?? TakeSnapshot(call),
            "snapshot-delete" => OnSnapshotDelete?.Invoke(call) ?? DeleteSnapshot(call),
            "blockjob" when call.Has("--info") => Results.Ok(BlockJobs.GetValueOrDefault(call.ValueOf("--path")!, "\n")),
            "blockjob" when call.Has("--pivot") => OnPivot?.Invoke(call)
                ?? Results.VirshError(string.Format(null, NoJob, call.ValueOf("--path"))),
            "blockjob" when call.Has("--bandwidth") => OnBandwidth?.Invoke(call) ?? SetBandwidth(call),
            "blockjob" when call.Has("--abort") => OnAbort?.Invoke(call) ?? Abort(call),
            "blockcommit" => OnBlockCommit?.Invoke(call)
                ?? Results.VirshError($"error: invalid argument: could not find base image in chain for '{call.ValueOf("--path")}'\n"),
            _ => throw new InvalidOperationException($"The fake host does not know: {call}"),
        };
    }

    private ProcessResult SetBandwidth(Invocation call)
    {
        var target = call.ValueOf("--path")!;
        if (VirshClient.ParseBlockJob(BlockJobs.GetValueOrDefault(target, "\n")) is not { } job)
            return Results.VirshError(string.Format(null, NoJob, target));
        BlockJobs[target] = CommitJob(job.Current, job.End, long.Parse(call.ValueOf("--bandwidth")!, System.Globalization.CultureInfo.InvariantCulture));
        return Results.Ok();
    }

    private ProcessResult Abort(Invocation call)
    {
        var target = call.ValueOf("--path")!;
        return BlockJobs.TryRemove(target, out _) ? Results.Ok() : Results.VirshError(string.Format(null, NoJob, target));
    }
}

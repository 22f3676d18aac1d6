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
    public Func<Invocation, ProcessResult>? OnQemuImgCommit { get; set; }

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
        var domain = call.ValueOf("--domain");
        if (domain != Domain)
            return Results.VirshError($"error: failed to get domain '{domain}'\n");
        return call.Command switch
        {
            "domstate" => Results.Ok(State + "\n\n"),
            "dumpxml" => Results.Ok(call.Has("--inactive") ? InactiveXml : LiveXml),
            "snapshot-list" => Results.Ok(string.Concat(Snapshots.Select(s => s + "\n")) + "\n"),
            "qemu-agent-command" => AgentPing,
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

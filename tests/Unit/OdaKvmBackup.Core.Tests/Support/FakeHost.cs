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
        Runner = new FakeRunner(Handle);
    }

    public string Domain { get; }
    public FakeRunner Runner { get; }
    public VirshClient Virsh => new(Runner);
    public QemuImgClient QemuImg => new(Runner);

    public string State { get; set; } = "running";
    public string LiveXml { get; set; } = "";
    public string InactiveXml { get; set; } = "";
    public List<string> Snapshots { get; } = new();
    /// <summary>Target -> stdout of `blockjob --info --raw` (no entry: no job, stdout "\n").</summary>
    public Dictionary<string, string> BlockJobs { get; } = new(StringComparer.Ordinal);
    public ProcessResult AgentPing { get; set; } = Results.Ok("{\"return\":{}}\n\n");
    /// <summary>Path -> stdout of `qemu-img info --output=json -U path`.</summary>
    public Dictionary<string, string> ImageInfo { get; } = new(StringComparer.Ordinal);

    public Func<Invocation, ProcessResult>? OnBlockCommit { get; set; }
    public Func<Invocation, ProcessResult>? OnPivot { get; set; }
    public Func<Invocation, ProcessResult>? OnDefine { get; set; }
    public Func<Invocation, ProcessResult>? OnQemuImgCommit { get; set; }

    public IReadOnlyList<Invocation> Calls => Runner.Calls;

    public int Count(Func<Invocation, bool> predicate) => Runner.Calls.Count(predicate);

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
                ?? Results.VirshError($"error: invalid argument: disk {call.ValueOf("--path")} does not have an active block job\n"),
            "blockcommit" => OnBlockCommit?.Invoke(call)
                ?? Results.VirshError($"error: invalid argument: could not find base image in chain for '{call.ValueOf("--path")}'\n"),
            _ => throw new InvalidOperationException($"The fake host does not know: {call}"),
        };
    }
}

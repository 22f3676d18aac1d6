using System.Collections.Concurrent;
using System.Xml.Linq;

namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>A domain the way back defines, creates, starts or destroys on the fake host (see <see cref="FakeHost.Domains"/>).</summary>
internal sealed class FakeDomain
{
    public required string Xml { get; set; }
    public string State { get; set; } = "running";
    public bool Transient { get; init; }
}

/// <summary>
/// The one fake of a host's virsh and qemu-img, answering through a <see cref="FakeRunner"/>, shared by the unit
/// tests of the backup (OdaKvmBackup.Core.Tests) and of the way back (OdaKvmBackup.WayBack.Tests, which links this
/// file). The backup side sees one libvirt domain (<see cref="Domain"/>): the commands that change something
/// (blockcommit, blockjob --pivot, define, qemu-img commit) call the test's hooks, which change the state the next
/// queries see. The way back sees <see cref="Domains"/>: define, create, start and destroy change them as libvirt
/// would, and qemu-img create/check/info answer for the copies (<see cref="ImageChecks"/>, <see cref="ImageInfos"/>).
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

    /// <summary>A host without a domain of the backup's own: only <see cref="Domains"/> (the way back's tests).</summary>
    public FakeHost()
        : this(NoDomain)
    {
    }

    private const string NoDomain = "";

    public string Domain { get; }
    public FakeRunner Runner { get; }
    public VirshClient Virsh => new(Runner);
    public QemuImgClient QemuImg => new(Runner);
    public HostTools Tools => new(Virsh, QemuImg);

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

    /// <summary>The way back's domains (name -> definition and state): virsh define and create add one, start and
    /// destroy change it (a transient one is gone once destroyed), list and dumpxml show them.</summary>
    public Dictionary<string, FakeDomain> Domains { get; } = new(StringComparer.Ordinal);
    /// <summary>`virsh destroy` of a domain in <see cref="Domains"/> answered otherwise (null: it goes, as usual).</summary>
    public Func<Invocation, ProcessResult?>? OnDestroy { get; set; }
    /// <summary>Whether the guest agent of a domain in <see cref="Domains"/> answers qemu-agent-command.</summary>
    public bool AgentAnswers { get; set; } = true;
    /// <summary>qemu-img check's exit code and output, per file.</summary>
    public Dictionary<string, (int Exit, string Output)> ImageChecks { get; } = new(StringComparer.Ordinal);
    /// <summary>What `qemu-img info --output=json` prints, by a file's name in the set: it also answers for that
    /// name with a suffix (a boot test's overlay, a restore's partial file). Any other existing file that is not in
    /// <see cref="ImageInfo"/> gets the format asked for with -f and its length as virtual size, as qemu-img says
    /// of a plain image.</summary>
    public Dictionary<string, string> ImageInfos { get; } = new(StringComparer.Ordinal);
    /// <summary>What `qemu-img info -f &lt;format&gt;` prints on stderr (exit code 1) for a file whose name starts
    /// with the key, when its format is the value's: "boot" -> ("qcow2", "Image is not in qcow2 format").</summary>
    public Dictionary<string, (string Format, string Error)> ImageInfoErrors { get; } = new(StringComparer.Ordinal);
    /// <summary>What a created domain prints on its serial console (nothing when null).</summary>
    public string? ConsoleOutput { get; set; }
    /// <summary>Every definition given to virsh define or create for a domain of <see cref="Domains"/>, as it was given.</summary>
    public List<(string Verb, string Xml)> Given { get; } = new();

    public const string HostEmulator = "/usr/libexec/qemu-kvm";

    /// <summary>What `virsh domcapabilities` prints: the host's emulator and firmware.</summary>
    public string DomainCapabilities { get; set; } = $"""
        <domainCapabilities>
          <path>{HostEmulator}</path>
          <domain>qemu</domain>
          <machine>pc-i440fx-7.2</machine>
          <arch>x86_64</arch>
          <os supported='yes'>
            <loader supported='yes'>
              <value>/usr/share/OVMF/OVMF_CODE.fd</value>
              <enum name='type'><value>rom</value><value>pflash</value></enum>
            </loader>
          </os>
        </domainCapabilities>
        """;

    public void Add(string name, string xml, string state = "running") => Domains[name] = new FakeDomain { Xml = xml, State = state };

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
        if (Domain != NoDomain && (call.Has("--all") || State is not ("shut off" or "crashed")))
            names.Add(Domain);
        names.AddRange(OtherDomains.Keys);
        names.AddRange(Domains.Where(p => call.Has("--all") || p.Value.State == "running").Select(p => p.Key));
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

    /// <summary>Every call as its command line: the program, then its arguments.</summary>
    public IReadOnlyList<string[]> CommandLines => Runner.Calls.Select(c => (string[])[c.Program, .. c.Args]).ToList();

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
        if (call.Program == "chown")
            return Results.Ok("");
        if (call.Program == "stat")
            return Stat(call.Args[^1]);
        if (call.Program == "qemu-img")
        {
            return call.Command switch
            {
                "info" => ImageInfo.TryGetValue(call.Args[^1], out var json) ? Results.Ok(json) : ImageInfoOf(call),
                "commit" => OnQemuImgCommit?.Invoke(call) ?? Results.Ok("Image committed.\n"),
                "create" => CreateImage(call),
                "check" => ImageChecks.TryGetValue(call.Args[^1], out var check)
                    ? new ProcessResult(check.Exit, check.Output, "", TimeSpan.Zero)
                    : Results.Ok("No errors were found on the image.\n"),
                _ => throw new InvalidOperationException($"The fake host does not know: {call}"),
            };
        }
        if (call.Program != "virsh")
            throw new InvalidOperationException($"The fake host does not know: {call}");
        if (call.Command is "define" or "create" && DefinitionFor(call) is { } definition)
            return DefineOrCreate(call, definition.Name, definition.Xml);
        if (call.Command == "define")
            return OnDefine?.Invoke(call) ?? Results.Ok($"Domain '{Domain}' defined from {call.ValueOf("--file")}\n\n");
        if (call.Command == "list")
            return OnList?.Invoke(call) ?? ListDomains(call);
        if (call.Command == "domcapabilities")
            return Results.Ok(DomainCapabilities);
        var domain = call.ValueOf("--domain");
        if (domain is not null && OtherDomains.TryGetValue(domain, out var other))
            return OtherDomain(call, other);
        if (domain is not null && Domains.TryGetValue(domain, out var wayBack))
            return WayBackDomain(call, domain, wayBack);
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

    /// <summary>The definition a virsh define or create gives, when it is for a domain of <see cref="Domains"/>
    /// (not the backup's own domain, whose define goes to <see cref="OnDefine"/>).</summary>
    private (string Name, string Xml)? DefinitionFor(Invocation call)
    {
        if (call.ValueOf("--file") is not { } file || !File.Exists(file))
            return null;
        var xml = File.ReadAllText(file);
        var name = DomainXml.Parse(xml).Name;
        return name == Domain ? null : (name, xml);
    }

    private ProcessResult DefineOrCreate(Invocation call, string name, string xml)
    {
        var create = call.Command == "create";
        Given.Add((call.Command, xml));
        // The guest "boots": what it prints lands in the serial console's log file, as QEMU writes it.
        if (create && ConsoleOutput is not null
            && XDocument.Parse(xml).Descendants("serial").Elements("source").Attributes("path").FirstOrDefault() is { } log)
            File.WriteAllText(log.Value, ConsoleOutput);
        Domains[name] = new FakeDomain { Xml = xml, State = create ? "running" : "shut off", Transient = create };
        return Results.Ok($"Domain '{name}' {(create ? "created" : "defined")} from file\n\n");
    }

    private ProcessResult WayBackDomain(Invocation call, string name, FakeDomain domain)
    {
        switch (call.Command)
        {
            case "dumpxml":
                return Results.Ok(domain.Xml);
            case "domstate":
                return Results.Ok(domain.State + "\n\n");
            case "destroy":
                if (OnDestroy?.Invoke(call) is { } answer)
                    return answer;
                if (domain.Transient)
                    Domains.Remove(name);
                else
                    domain.State = "shut off";
                return Results.Ok($"Domain '{name}' destroyed\n\n");
            case "start":
                domain.State = "running";
                return Results.Ok();
            case "qemu-agent-command":
                return AgentAnswers ? Results.Ok("{\"return\":{}}\n\n") : Results.VirshError("error: Guest agent is not responding: QEMU guest agent is not connected\n");
            default:
                throw new InvalidOperationException($"The fake host does not know: {call}");
        }
    }

    /// <summary>stat --format=%f -- path: the raw mode in hex, of the link itself.</summary>
    private static ProcessResult Stat(string path)
    {
        var info = new FileInfo(path);
        return info.LinkTarget is not null ? Results.Ok("a1ff\n") : Directory.Exists(path) ? Results.Ok("41ed\n") : info.Exists ? Results.Ok("81a4\n")
            : new ProcessResult(1, "", $"stat: cannot statx '{path}': No such file or directory\n", TimeSpan.Zero);
    }

    /// <summary>qemu-img create [options] file [size]: the overlay is a small file that names its backing file.</summary>
    private static ProcessResult CreateImage(Invocation call)
    {
        var file = call.Args[^1].All(char.IsAsciiDigit) ? call.Args[^2] : call.Args[^1];
        File.WriteAllText(file, "overlay of " + call.ValueOf("-b"));
        return Results.Ok("");
    }

    private ProcessResult ImageInfoOf(Invocation call)
    {
        var path = call.Args[^1];
        var name = Path.GetFileName(path);
        if (ImageInfoErrors.FirstOrDefault(p => name == p.Key || name.StartsWith(p.Key + ".", StringComparison.Ordinal)) is { Value: var failure }
            && failure.Format == call.ValueOf("-f"))
            return new ProcessResult(1, "", $"qemu-img: Could not open '{path}': {failure.Error}\n", TimeSpan.Zero);
        if (ImageInfos.FirstOrDefault(p => name == p.Key || name.StartsWith(p.Key + ".", StringComparison.Ordinal)) is { Value: { } json })
            return Results.Ok(json);
        if (!File.Exists(path))
            return new ProcessResult(1, "", $"qemu-img: Could not open '{path}': Could not open '{path}': No such file or directory\n", TimeSpan.Zero);
        var length = new FileInfo(path).Length;
        return Results.Ok($"{{ \"format\": \"{call.ValueOf("-f") ?? "raw"}\", \"virtual-size\": {length}, \"actual-size\": {length}, \"filename\": \"{path}\" }}\n");
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

using System.Xml.Linq;
using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.QemuImg;
using OdaKvmBackup.Core.Safety;

namespace OdaKvmBackup.WayBack.Tests.Support;

/// <summary>One domain as the fake host holds it.</summary>
internal sealed class FakeDomain
{
    public required string Xml { get; set; }
    public string State { get; set; } = "running";
    public bool Transient { get; init; }
}

/// <summary>
/// A host with virsh and qemu-img, answering from a dictionary of domains, recording every call. It knows the
/// commands the way back runs: list, dumpxml, domstate, define, create, start, destroy, qemu-agent-command,
/// qemu-img create/check, chown.
/// </summary>
internal sealed class FakeLibvirt : IProcessRunner
{
    private readonly List<string[]> _calls = new();

    public Dictionary<string, FakeDomain> Domains { get; } = new(StringComparer.Ordinal);
    public bool AgentAnswers { get; set; } = true;
    /// <summary>qemu-img check's exit code and output, per file.</summary>
    public Dictionary<string, (int Exit, string Output)> ImageChecks { get; } = new(StringComparer.Ordinal);
    /// <summary>What `qemu-img info --output=json` prints, by a file's name in the set: it also answers for that
    /// name with a suffix (a boot test's overlay, a restore's partial file). Any other file gets the format asked
    /// for with -f and its length as virtual size, as qemu-img says of a plain image.</summary>
    public Dictionary<string, string> ImageInfos { get; } = new(StringComparer.Ordinal);
    /// <summary>What `qemu-img info -f &lt;format&gt;` prints on stderr (exit code 1) for a file whose name starts
    /// with the key, when its format is the value's: "boot" -> ("qcow2", "Image is not in qcow2 format").</summary>
    public Dictionary<string, (string Format, string Error)> ImageInfoErrors { get; } = new(StringComparer.Ordinal);
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

    public const string HostEmulator = "/usr/libexec/qemu-kvm";

    public IReadOnlyList<string[]> Calls
    {
        get
        {
            lock (_calls)
                return _calls.ToList();
        }
    }

    public HostTools Tools => new(new VirshClient(this), new QemuImgClient(this));

    public void Add(string name, string xml, string state = "running") => Domains[name] = new FakeDomain { Xml = xml, State = state };

    public Task<ProcessResult> RunAsync(string program, IReadOnlyList<string> arguments, Action<string>? onStandardErrorLine = null,
        CancellationToken cancellationToken = default, TimeSpan? timeout = null)
    {
        lock (_calls)
            _calls.Add([program, .. arguments]);
        return Task.FromResult(Handle(program, arguments));
    }

    private static ProcessResult Ok(string stdout = "\n") => new(0, stdout, "", TimeSpan.Zero);

    private static ProcessResult Error(string stderr) => new(1, "\n", stderr, TimeSpan.Zero);

    private static string? ValueOf(IReadOnlyList<string> args, string option)
    {
        for (var i = 0; i < args.Count - 1; i++)
        {
            if (args[i] == option)
                return args[i + 1];
        }
        return null;
    }

    /// <summary>What a created domain prints on its serial console (nothing when null).</summary>
    public string? ConsoleOutput { get; set; }

    /// <summary>Every definition given to virsh define or create, as it was given.</summary>
    public List<(string Verb, string Xml)> Given { get; } = new();

    private ProcessResult Handle(string program, IReadOnlyList<string> args)
    {
        if (program == "chown")
            return Ok("");
        if (program == "stat")
        {
            // stat --format=%f -- path: the raw mode in hex, of the link itself
            var path = args[^1];
            var info = new FileInfo(path);
            return info.LinkTarget is not null ? Ok("a1ff\n") : Directory.Exists(path) ? Ok("41ed\n") : info.Exists ? Ok("81a4\n")
                : new ProcessResult(1, "", $"stat: cannot statx '{path}': No such file or directory\n", TimeSpan.Zero);
        }
        if (program == "qemu-img")
        {
            if (args[0] == "create")
            {
                // qemu-img create [options] file [size]
                var file = args[^1].All(char.IsAsciiDigit) ? args[^2] : args[^1];
                File.WriteAllText(file, "overlay of " + ValueOf(args, "-b"));
                return Ok("");
            }
            if (args[0] == "check")
                return ImageChecks.TryGetValue(args[^1], out var check) ? new ProcessResult(check.Exit, check.Output, "", TimeSpan.Zero) : Ok("No errors were found on the image.\n");
            if (args[0] == "info")
            {
                var name = Path.GetFileName(args[^1]);
                if (ImageInfoErrors.FirstOrDefault(p => name == p.Key || name.StartsWith(p.Key + ".", StringComparison.Ordinal)) is { Value: var failure }
                    && failure.Format == ValueOf(args, "-f"))
                    return new ProcessResult(1, "", $"qemu-img: Could not open '{args[^1]}': {failure.Error}\n", TimeSpan.Zero);
                if (ImageInfos.FirstOrDefault(p => name == p.Key || name.StartsWith(p.Key + ".", StringComparison.Ordinal)) is { Value: { } json })
                    return Ok(json);
                if (!File.Exists(args[^1]))
                    return new ProcessResult(1, "", $"qemu-img: Could not open '{args[^1]}': No such file or directory\n", TimeSpan.Zero);
                var length = new FileInfo(args[^1]).Length;
                return Ok($"{{ \"format\": \"{ValueOf(args, "-f") ?? "raw"}\", \"virtual-size\": {length}, \"actual-size\": {length}, \"filename\": \"{args[^1]}\" }}\n");
            }
            throw new InvalidOperationException("fake qemu-img does not know " + string.Join(' ', args));
        }
        var domain = ValueOf(args, "--domain");
        FakeDomain? d = null;
        if (domain is not null && !Domains.TryGetValue(domain, out d))
            return Error($"error: failed to get domain '{domain}'\nerror: Domain not found: no domain with matching name '{domain}'\n");
        switch (args[0])
        {
            case "list":
                var names = Domains.Where(p => args.Contains("--all") || p.Value.State == "running").Select(p => p.Key);
                return Ok(string.Concat(names.Select(n => n + "\n")) + "\n");
            case "dumpxml":
                return Ok(d!.Xml);
            case "domstate":
                return Ok(d!.State + "\n\n");
            case "destroy":
                if (d!.Transient)
                    Domains.Remove(domain!);
                else
                    d.State = "shut off";
                return Ok($"Domain '{domain}' destroyed\n\n");
            case "start":
                d!.State = "running";
                return Ok();
            case "define":
            case "create":
                var xml = File.ReadAllText(ValueOf(args, "--file")!);
                var name = DomainXml.Parse(xml).Name;
                Given.Add((args[0], xml));
                // The guest "boots": what it prints lands in the serial console's log file, as QEMU writes it.
                if (args[0] == "create" && ConsoleOutput is not null
                    && XDocument.Parse(xml).Descendants("serial").Elements("source").Attributes("path").FirstOrDefault() is { } log)
                    File.WriteAllText(log.Value, ConsoleOutput);
                Domains[name] = new FakeDomain { Xml = xml, State = args[0] == "create" ? "running" : "shut off", Transient = args[0] == "create" };
                return Ok($"Domain '{name}' {(args[0] == "create" ? "created" : "defined")} from file\n\n");
            case "domcapabilities":
                return Ok(DomainCapabilities);
            case "qemu-agent-command":
                return AgentAnswers ? Ok("{\"return\":{}}\n\n") : Error("error: Guest agent is not responding: QEMU guest agent is not connected\n");
            default:
                throw new InvalidOperationException("fake virsh does not know " + string.Join(' ', args));
        }
    }
}

/// <summary>A domain XML with file disks, a serial log, a guest agent channel, an interface, a CD-ROM and NVRAM.</summary>
internal static class Xmls
{
    public static string Domain(string name, string boot, string data, string? extraDevices = null, string bootFormat = "qcow2") => $"""
        <domain type='qemu' id='7'>
          <name>{name}</name>
          <uuid>4840f49f-deac-44fa-8330-c5873eece61b</uuid>
          <metadata><oda:info xmlns:oda='http://example/oda'><oda:repo>{boot}</oda:repo></oda:info></metadata>
          <memory unit='MiB'>256</memory>
          <os>
            <type arch='x86_64' machine='pc'>hvm</type>
            <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>
            <nvram template='/usr/share/OVMF/OVMF_VARS.fd'>/var/lib/libvirt/qemu/nvram/{name}_VARS.fd</nvram>
          </os>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <disk type='file' device='disk'>
              <driver name='qemu' type='{bootFormat}'/>
              <source file='{boot}' index='2'/>
              <backingStore/>
              <target dev='vda' bus='virtio'/>
            </disk>
            <disk type='block' device='disk'>
              <driver name='qemu' type='raw'/>
              <source dev='{data}'/>
              <target dev='vdb' bus='virtio'/>
            </disk>
            <disk type='file' device='cdrom'>
              <driver name='qemu' type='raw'/>
              <source file='/isos/install.iso'/>
              <target dev='sda' bus='sata'/>
              <readonly/>
            </disk>
            <interface type='network'>
              <mac address='52:54:00:12:34:56'/>
              <source network='default'/>
              <target dev='vnet3'/>
              <model type='virtio'/>
            </interface>
            <serial type='file'>
              <source path='/var/log/vms/{name}-console.log'/>
              <target port='0'/>
            </serial>
            <console type='file'>
              <source path='/var/log/vms/{name}-console.log'/>
              <target type='serial' port='0'/>
            </console>
            <channel type='unix'>
              <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-7-{name}/org.qemu.guest_agent.0'/>
              <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
            </channel>
            <graphics type='vnc' port='5901' autoport='no' listen='127.0.0.1'/>
            <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
            {extraDevices}
          </devices>
        </domain>
        """;
}

/// <summary>A fresh folder, removed on Dispose.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "wayback-tests-" + Guid.NewGuid().ToString("N"));

    public string Combine(params string[] parts) => System.IO.Path.Combine([Path, .. parts]);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Points the state folder at a temp folder; every class that uses it is in this collection, so none run
/// at the same time (the variable is process-wide).</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class StateCollection
{
    public const string Name = "State folder";
}

internal sealed class StateFolder : IDisposable
{
    private readonly string? _previous = Environment.GetEnvironmentVariable(StateDirectory.EnvironmentVariable);
    private readonly TempFolder _folder = new();

    public StateFolder() => Environment.SetEnvironmentVariable(StateDirectory.EnvironmentVariable, _folder.Path);

    public string Path => _folder.Path;

    public void Dispose()
    {
        Environment.SetEnvironmentVariable(StateDirectory.EnvironmentVariable, _previous);
        _folder.Dispose();
    }
}

/// <summary>Records what the code under test wanted the user to see.</summary>
internal sealed class RecordingSink : IOperationSink
{
    public List<string> Warnings { get; } = new();
    public List<string> Lines { get; } = new();
    public void Verbose(string message) => Lines.Add(message);
    public void Warning(string message) => Warnings.Add(message);
    public void Progress(ProgressUpdate update) { }
}

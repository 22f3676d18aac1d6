namespace OdaKvmBackup.WayBack.Tests.Support;

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

using System.Xml.Linq;
using OdaKvmBackup.Core.Tests.Support;
using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

public class DomainXmlRewriterTests
{
    private const string Boot = "/u05/app/sharedrepo/vmstore/.ACFS/snaps/vm_vm1/vm1";
    private const string Data = "/dev/mapper/vdisk1";
    private const string Folder = "/restore/vm1-copy";

    private const string Ovmf = "/usr/share/OVMF/OVMF_CODE.fd";

    private static DomainCopyRequest Request(bool boot = false, IReadOnlyDictionary<string, DomainCopyDisk>? disks = null) => new(
        "vm1-copy",
        disks ?? new Dictionary<string, DomainCopyDisk> { ["vda"] = new(Folder + "/vm1", "qcow2"), ["vdb"] = new(Folder + "/vdisk1", "raw") },
        Folder, [Folder], DropInterfaces: boot, SerialToFile: boot);

    /// <summary>The host: its emulator and firmware (domcapabilities), and its own definition of vm1 (no direct
    /// kernel boot unless <paramref name="own"/> says so); null for a host that does not define vm1.</summary>
    private static HostDomainFacts Host(DomainBootFiles? own = null, bool definesVm = true) =>
        new("vm1", FakeHost.HostEmulator, [Ovmf], definesVm ? own ?? new DomainBootFiles(null, null, null) : null);

    private static DomainCopy Rewrite(string xml, DomainCopyRequest request, HostDomainFacts? host = null) => DomainXmlRewriter.Rewrite(xml, request, host ?? Host());

    private static XElement Root(DomainCopy copy) => XDocument.Parse(copy.Xml).Root!;

    [Fact]
    public void The_copy_gets_the_new_name_and_no_uuid_id_or_mac_so_libvirt_makes_new_ones()
    {
        var copy = Rewrite(Xmls.Domain("vm1", Boot, Data), Request());
        var root = Root(copy);
        Assert.Equal("vm1-copy", (string?)root.Element("name"));
        Assert.Null(root.Element("uuid"));
        Assert.Null(root.Attribute("id"));
        var nic = Assert.Single(root.Element("devices")!.Elements("interface"));
        Assert.Null(nic.Element("mac"));
        Assert.Null(nic.Element("target"));
        Assert.Equal("default", (string?)nic.Element("source")?.Attribute("network"));
    }

    [Fact]
    public void Every_disk_points_at_its_restored_file_in_its_own_format_without_a_backing_chain()
    {
        var copy = Rewrite(Xmls.Domain("vm1", Boot, Data), Request());
        var disks = DomainXml.Parse(copy.Xml).Disks;
        Assert.Equal(["vda", "vdb"], disks.Select(d => d.Target));
        Assert.Equal([Folder + "/vm1", Folder + "/vdisk1"], disks.Select(d => d.Source));
        Assert.Equal(["qcow2", "raw"], disks.Select(d => d.Format));
        Assert.All(disks, d => Assert.Equal("file", d.Type));
        Assert.All(disks, d => Assert.Empty(d.BackingChain));
        Assert.DoesNotContain("backingStore", copy.Xml, StringComparison.Ordinal);
    }

    [Fact]
    public void Nothing_of_the_source_VM_is_named_any_more_except_read_only_boot_files_and_metadata()
    {
        var copy = Rewrite(Xmls.Domain("vm1", Boot, Data), Request());
        var withoutMetadata = Root(copy);
        withoutMetadata.Element("metadata")?.Remove();
        var text = withoutMetadata.ToString();
        foreach (var path in new[] { Boot, Data, "/var/log/vms/vm1-console.log", "/var/lib/libvirt/qemu/nvram/vm1_VARS.fd", "domain-7-vm1", "/isos/install.iso", "52:54:00:12:34:56", "vnet3", "5901" })
            Assert.DoesNotContain(path, text, StringComparison.Ordinal);
        Assert.Contains("/usr/share/OVMF/OVMF_CODE.fd", text, StringComparison.Ordinal); // firmware code: read-only, shared
        Assert.Contains(copy.Notes, n => n.Contains("NVRAM", StringComparison.Ordinal));
        Assert.Contains(copy.Notes, n => n.Contains("ejected", StringComparison.Ordinal));
    }

    [Fact]
    public void Serial_and_console_logs_move_into_the_copys_folder_under_one_new_name()
    {
        var root = Root(Rewrite(Xmls.Domain("vm1", Boot, Data), Request()));
        var devices = root.Element("devices")!;
        var serial = (string?)devices.Element("serial")!.Element("source")!.Attribute("path");
        var console = (string?)devices.Element("console")!.Element("source")!.Attribute("path");
        Assert.Equal(Folder + "/vm1-copy-serial0.log", serial);
        Assert.Equal(serial, console);
        var agent = devices.Element("channel")!;
        Assert.Null(agent.Element("source")); // libvirt makes the copy's own agent socket
    }

    [Fact]
    public void A_boot_test_copy_has_no_network_and_its_console_in_a_file()
    {
        var copy = Rewrite(Xmls.Domain("vm1", Boot, Data).Replace("<serial type='file'>", "<serial type='pty'>", StringComparison.Ordinal), Request(boot: true));
        var devices = Root(copy).Element("devices")!;
        Assert.Empty(devices.Elements("interface"));
        Assert.Equal("file", (string?)devices.Element("serial")!.Attribute("type"));
        Assert.Equal(Folder + "/vm1-copy-serial0.log", copy.ConsoleLog);
        Assert.True(copy.HasGuestAgentChannel);
    }

    [Fact]
    public void A_disk_the_set_does_not_hold_is_left_out_and_said_so()
    {
        var copy = Rewrite(Xmls.Domain("vm1", Boot, Data),
            Request(disks: new Dictionary<string, DomainCopyDisk> { ["vda"] = new(Folder + "/vm1", "qcow2") }));
        Assert.Equal(["vda"], DomainXml.Parse(copy.Xml).Disks.Select(d => d.Target));
        Assert.Contains(copy.Notes, n => n.Contains("vdb", StringComparison.Ordinal) && n.Contains("not in the backup set", StringComparison.Ordinal));
        Assert.DoesNotContain(Data, copy.Xml, StringComparison.Ordinal);
    }

    public static TheoryData<string, string> Unsafe => new()
    {
        { "<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='3' slot='0' function='0'/></source></hostdev>", "<hostdev>" },
        { "<filesystem type='mount'><source dir='/srv/share'/><target dir='share'/></filesystem>", "<filesystem>" },
        { "<interface type='vhostuser'><source type='unix' path='/run/vhost.sock' mode='client'/><model type='virtio'/></interface>", "vhostuser" },
    };

    [Theory]
    [MemberData(nameof(Unsafe))]
    public void What_the_copy_cannot_be_the_VM_without_is_refused_with_what_it_is(string device, string named)
    {
        var ex = Assert.Throws<BackupException>(() => Rewrite(Xmls.Domain("vm1", Boot, Data, device), Request()));
        Assert.Equal(ErrorIds.DomainXmlNotRestorable, ex.ErrorId);
        Assert.Contains(named, ex.Message, StringComparison.Ordinal);
        Assert.NotNull(ex.RecommendedAction);
    }

    public static TheoryData<string, string, string> LeftOut => new()
    {
        { "<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>", "/dev/tpm0", "<tpm>" },
        { "<serial type='dev'><source path='/dev/ttyS1'/><target port='1'/></serial>", "/dev/ttyS1", "<serial type='dev'>" },
        { "<memory model='nvdimm'><source><path>/dev/pmem0</path></source><target><size unit='KiB'>524288</size></target></memory>", "/dev/pmem0", "<memory>" },
        { "<sound model='ich9'/>", "sound", "<sound>" },
        { "<panic model='isa'/>", "panic", "<panic>" },
    };

    [Theory]
    [MemberData(nameof(LeftOut))]
    public void A_device_a_copy_is_not_built_with_is_left_out_and_said_so(string device, string absent, string said)
    {
        var copy = Rewrite(Xmls.Domain("vm1", Boot, Data, device), Request());
        Assert.DoesNotContain(absent, copy.Xml, StringComparison.Ordinal);
        Assert.Contains(copy.LeftOut, l => l.StartsWith(said, StringComparison.Ordinal));
    }

    [Fact]
    public void A_path_left_pointing_at_the_production_disk_is_refused_by_the_last_check()
    {
        // As if the rewriting had missed a disk: the final check finds the production path and refuses.
        var root = XDocument.Parse($"<domain><name>vm1-copy</name><devices><disk type='file' device='disk'><source file='{Folder}/vm1'/><target dev='vda'/></disk><disk type='file' device='disk'><source file='{Boot}'/><target dev='vdb'/></disk></devices></domain>").Root!;
        var ex = Assert.Throws<BackupException>(() => DomainXmlRewriter.RequireOnlyAllowedPaths(root, Request()));
        Assert.Equal(ErrorIds.DomainXmlNotRestorable, ex.ErrorId);
        Assert.Contains(Boot, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_set_disk_missing_from_the_saved_definition_is_refused()
    {
        var disks = new Dictionary<string, DomainCopyDisk> { ["vda"] = new(Folder + "/vm1", "qcow2"), ["vdb"] = new(Folder + "/vdisk1", "raw"), ["vdc"] = new(Folder + "/x", "raw") };
        var ex = Assert.Throws<BackupException>(() => Rewrite(Xmls.Domain("vm1", Boot, Data), Request(disks: disks)));
        Assert.Contains("vdc", ex.Message, StringComparison.Ordinal);
    }

    private const string QemuNs = "http://libvirt.org/schemas/domain/qemu/1.0";

    /// <summary>The saved definition of vm1 with a forger's additions: attributes and elements on &lt;domain&gt;, in
    /// &lt;os&gt; and in &lt;devices&gt;.</summary>
    private static string Forged(string? root = null, string? os = null, string? devices = null, string rootAttributes = "") =>
        Xmls.Domain("vm1", Boot, Data, devices)
            .Replace("<domain type='qemu' id='7'>", $"<domain type='qemu' id='7'{rootAttributes}>", StringComparison.Ordinal)
            .Replace("</os>", (os ?? "") + "</os>", StringComparison.Ordinal)
            .Replace("</domain>", (root ?? "") + "</domain>", StringComparison.Ordinal);

    /// <summary>Each way a set's domain.xml could name a host file or widen what QEMU may touch (issue 13): what it
    /// plants, and the text that must not reach the copy's definition.</summary>
    public static TheoryData<string, string, string[]> Dangerous => new()
    {
        { "qemu:commandline with -drive file=<host file>", Forged(rootAttributes: $" xmlns:qemu='{QemuNs}'",
            root: "<qemu:commandline><qemu:arg value='-drive'/><qemu:arg value='file=/etc/shadow,format=raw,if=none,id=x'/></qemu:commandline>"),
            ["commandline", "/etc/shadow", QemuNs] },
        { "qemu:env", Forged(rootAttributes: $" xmlns:qemu='{QemuNs}'", root: "<qemu:commandline><qemu:env name='LD_PRELOAD' value='/tmp/evil.so'/></qemu:commandline>"),
            ["LD_PRELOAD", "/tmp/evil.so", QemuNs] },
        { "qemu namespace on an element of its own", Forged(devices: $"<qemu:device xmlns:qemu='{QemuNs}'><qemu:arg value='-device'/></qemu:device>"),
            [QemuNs, "-device"] },
        { "a static dac seclabel +0:+0", Forged(root: "<seclabel type='static' model='dac' relabel='yes'><label>+0:+0</label></seclabel>"),
            ["seclabel", "+0:+0"] },
        { "a seclabel on a disk's source", Forged(devices: "<disk type='file' device='disk'><source file='/x/vm1'><seclabel model='dac' relabel='no'/></source><target dev='vdc'/></disk>"),
            ["seclabel"] },
        { "emulator=/tmp/evil", Xmls.Domain("vm1", Boot, Data).Replace("/usr/bin/qemu-system-x86_64", "/tmp/evil", StringComparison.Ordinal),
            ["/tmp/evil"] },
        { "a loader at a host path", Xmls.Domain("vm1", Boot, Data).Replace("/usr/share/OVMF/OVMF_CODE.fd", "/etc/shadow", StringComparison.Ordinal),
            ["/etc/shadow"] },
        { "a kernel, initrd and dtb of the host", Forged(os: "<kernel>/boot/vmlinuz-host</kernel><initrd>/etc/shadow</initrd><dtb>/etc/passwd</dtb><cmdline>console=ttyS0</cmdline>"),
            ["/boot/vmlinuz-host", "/etc/shadow", "/etc/passwd"] },
        { "an ACPI table from a host file", Forged(os: "<acpi><table type='slic'>/etc/shadow</table></acpi>"), ["/etc/shadow"] },
        { "a tcp serial port", Forged(devices: "<serial type='tcp'><source mode='connect' host='203.0.113.5' service='4444'/><protocol type='raw'/><target port='1'/></serial>"),
            ["tcp", "203.0.113.5"] },
        { "a udp channel", Forged(devices: "<channel type='udp'><source mode='bind' host='0.0.0.0' service='5555'/><source mode='connect' host='203.0.113.5' service='5556'/><target type='virtio' name='x.0'/></channel>"),
            ["udp", "203.0.113.5"] },
        { "a pipe console", Forged(devices: "<console type='pipe'><source path='/tmp/evil-pipe'/><target type='virtio' port='1'/></console>"), ["/tmp/evil-pipe", "pipe"] },
        { "an rng whose backend is a tcp egd", Forged(devices: "<rng model='virtio'><backend model='egd' type='tcp'><source mode='connect' host='203.0.113.5' service='708'/></backend></rng>"),
            ["egd", "203.0.113.5"] },
        { "an rng reading a host file", Forged(devices: "<rng model='virtio'><backend model='random'>/etc/shadow</backend></rng>"), ["/etc/shadow"] },
        { "a backing store of a set disk at a host file", Xmls.Domain("vm1", Boot, Data).Replace("<backingStore/>",
            "<backingStore type='file'><format type='raw'/><source file='/etc/shadow'/><backingStore/></backingStore>", StringComparison.Ordinal),
            ["/etc/shadow"] },
        { "a disk not in the set at a host file", Forged(devices: "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/etc/shadow'/><target dev='vdz' bus='virtio'/></disk>"),
            ["/etc/shadow", "vdz"] },
        { "a source file inside an interface", Forged(devices: "<interface type='network'><source network='default' file='/etc/shadow'/><source file='/etc/passwd'/><model type='virtio'/></interface>"),
            ["/etc/shadow", "/etc/passwd"] },
        { "an ethernet interface with a script", Forged(devices: "<interface type='ethernet'><script path='/tmp/evil.sh'/><downscript path='/tmp/evil2.sh'/><target dev='tap9' managed='no'/></interface>"),
            ["/tmp/evil.sh", "/tmp/evil2.sh", "tap9"] },
        { "an interface with its tap and vhost devices", Forged(devices: "<interface type='network'><source network='default'/><backend tap='/dev/evil-tap' vhost='/dev/evil-vhost'/></interface>"),
            ["/dev/evil-tap", "/dev/evil-vhost"] },
        { "graphics on a socket and every address", Forged(devices: "<graphics type='vnc' socket='/tmp/evil.sock'/><graphics type='spice' autoport='yes' listen='0.0.0.0'><listen type='address' address='0.0.0.0'/></graphics>"),
            ["/tmp/evil.sock", "0.0.0.0"] },
        { "shared memory from a host file", Forged(devices: "<shmem name='evil'><model type='ivshmem-plain'/><size unit='M'>4</size></shmem>"), ["shmem", "evil"] },
        { "USB redirection and a smartcard", Forged(devices: "<redirdev bus='usb' type='tcp'><source mode='connect' host='203.0.113.5' service='4000'/></redirdev><smartcard mode='passthrough' type='tcp'><source mode='connect' host='203.0.113.5' service='2001'/></smartcard>"),
            ["redirdev", "smartcard", "203.0.113.5"] },
        { "an input device of the host", Forged(devices: "<input type='evdev'><source dev='/dev/input/event0'/></input>"), ["/dev/input/event0"] },
        { "memory backed by a host file", Forged(root: "<memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>"), ["memoryBacking"] },
        { "firmware config entries from host files", Forged(root: "<sysinfo type='fwcfg'><entry name='opt/com.example/x' file='/etc/shadow'/></sysinfo>"), ["/etc/shadow"] },
        { "boot files and a CPU model in another namespace", Forged(os: "<x:kernel xmlns:x='http://example/x'>/etc/shadow</x:kernel><boot xmlns='http://example/y' dev='/etc/passwd'/>",
            root: "<cpu mode='custom'><x:model xmlns:x='http://example/x'>/etc/group</x:model></cpu>"), ["/etc/shadow", "/etc/passwd", "/etc/group", "http://example"] },
        { "metadata that hides a host path and a commandline", Forged(rootAttributes: $" xmlns:qemu='{QemuNs}'",
            root: "<metadata><qemu:commandline><qemu:arg value='-drive'/><qemu:arg value='file=/etc/shadow'/></qemu:commandline><x:disk xmlns:x='http://example/x'>/etc/shadow</x:disk></metadata>"),
            ["/etc/shadow", "commandline"] },
    };

    [Theory]
    [MemberData(nameof(Dangerous))]
    public void A_dangerous_construct_of_the_set_never_reaches_the_copys_definition(string what, string xml, string[] forbidden)
    {
        foreach (var boot in new[] { false, true })
        {
            try
            {
                var copy = Rewrite(xml, Request(boot));
                foreach (var text in forbidden)
                    Assert.False(copy.Xml.Contains(text, StringComparison.Ordinal), $"{what}: '{text}' is in the {(boot ? "boot test's" : "restored")} definition:\n{copy.Xml}");
            }
            catch (BackupException ex)
            {
                Assert.Equal(ErrorIds.DomainXmlNotRestorable, ex.ErrorId);
            }
        }
    }

    [Fact]
    public void A_document_type_with_entities_is_refused_not_expanded()
    {
        var xml = "<!DOCTYPE domain [<!ENTITY secret SYSTEM 'file:///etc/shadow'>]>" + Xmls.Domain("vm1", Boot, Data).Replace("<memory unit='MiB'>256</memory>", "<memory unit='MiB'>256</memory><description>&secret;</description>", StringComparison.Ordinal);
        var ex = Assert.Throws<BackupException>(() => Rewrite(xml, Request()));
        Assert.Equal(ErrorIds.DomainXmlNotRestorable, ex.ErrorId);
    }

    [Fact]
    public void A_domain_element_in_another_namespace_is_refused()
    {
        var xml = Xmls.Domain("vm1", Boot, Data).Replace("<domain type='qemu' id='7'>", $"<domain type='qemu' id='7' xmlns='{QemuNs}'>", StringComparison.Ordinal);
        var ex = Assert.Throws<BackupException>(() => Rewrite(xml, Request()));
        Assert.Equal(ErrorIds.DomainXmlNotRestorable, ex.ErrorId);
    }

    [Fact]
    public void Graphics_listen_on_the_loopback_only_with_a_port_libvirt_chooses()
    {
        var copy = Rewrite(Forged(devices: "<graphics type='spice' port='5930' autoport='no' listen='0.0.0.0' passwd='secret'><listen type='address' address='0.0.0.0'/></graphics>").Replace("<graphics type='vnc' port='5901' autoport='no' listen='127.0.0.1'/>", "", StringComparison.Ordinal), Request());
        var graphics = Assert.Single(Root(copy).Element("devices")!.Elements("graphics"));
        Assert.Equal("yes", (string?)graphics.Attribute("autoport"));
        Assert.Null(graphics.Attribute("port"));
        Assert.Null(graphics.Attribute("passwd"));
        Assert.All(graphics.DescendantsAndSelf().Attributes().Where(a => a.Name.LocalName is "listen" or "address"), a => Assert.Equal("127.0.0.1", a.Value));
    }

    [Fact]
    public void The_emulator_is_the_hosts_whatever_the_set_names_and_the_change_is_said()
    {
        var copy = Rewrite(Xmls.Domain("vm1", Boot, Data).Replace("/usr/bin/qemu-system-x86_64", "/tmp/evil", StringComparison.Ordinal), Request());
        Assert.Equal(FakeHost.HostEmulator, (string?)Root(copy).Element("devices")!.Element("emulator"));
        Assert.Contains(copy.LeftOut, l => l.Contains("/tmp/evil", StringComparison.Ordinal) && l.Contains(FakeHost.HostEmulator, StringComparison.Ordinal));
    }

    [Fact]
    public void Firmware_the_host_offers_is_kept_and_any_other_is_the_hosts_UEFI()
    {
        var kept = Root(Rewrite(Xmls.Domain("vm1", Boot, Data), Request())).Element("os")!;
        Assert.Equal(Ovmf, (string?)kept.Element("loader"));
        Assert.Equal("pflash", (string?)kept.Element("loader")!.Attribute("type"));
        Assert.Null(kept.Element("nvram"));

        var copy = Rewrite(Xmls.Domain("vm1", Boot, Data).Replace(Ovmf, "/etc/shadow", StringComparison.Ordinal), Request());
        var os = Root(copy).Element("os")!;
        Assert.Null(os.Element("loader"));
        Assert.Equal("efi", (string?)os.Attribute("firmware"));
        Assert.Contains(copy.Notes, n => n.Contains("/etc/shadow", StringComparison.Ordinal) && n.Contains("firmware='efi'", StringComparison.Ordinal));
    }

    private static readonly string DirectBoot = "<kernel>/var/lab/guest/vmlinuz</kernel><initrd>/var/lab/guest/initrd.img</initrd><cmdline>console=ttyS0 quiet</cmdline>";

    [Fact]
    public void A_kernel_and_initrd_are_kept_when_the_hosts_own_definition_of_the_VM_uses_the_same_files()
    {
        var copy = Rewrite(Forged(os: DirectBoot), Request(), Host(new DomainBootFiles("/var/lab/guest/vmlinuz", "/var/lab/guest/initrd.img", null)));
        var os = Root(copy).Element("os")!;
        Assert.Equal("/var/lab/guest/vmlinuz", (string?)os.Element("kernel"));
        Assert.Equal("/var/lab/guest/initrd.img", (string?)os.Element("initrd"));
        Assert.Equal("console=ttyS0 quiet", (string?)os.Element("cmdline"));
    }

    [Fact]
    public void A_kernel_or_initrd_the_hosts_definition_does_not_use_is_refused_naming_both()
    {
        var other = Assert.Throws<BackupException>(() => Rewrite(Forged(os: DirectBoot.Replace("/var/lab/guest/initrd.img", "/root/evil.img", StringComparison.Ordinal)), Request(),
            Host(new DomainBootFiles("/var/lab/guest/vmlinuz", "/var/lab/guest/initrd.img", null))));
        Assert.Equal(ErrorIds.DomainXmlNotRestorable, other.ErrorId);
        Assert.Contains("<initrd>/root/evil.img</initrd>", other.Message, StringComparison.Ordinal);
        Assert.Contains("/var/lab/guest/initrd.img", other.Message, StringComparison.Ordinal);

        var noDefinition = Assert.Throws<BackupException>(() => Rewrite(Forged(os: DirectBoot), Request(), Host(definesVm: false)));
        Assert.Contains("<kernel>/var/lab/guest/vmlinuz</kernel>", noDefinition.Message, StringComparison.Ordinal);
        Assert.Contains("no definition of 'vm1'", noDefinition.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void What_is_left_out_of_the_saved_definition_is_said_with_the_reason()
    {
        var copy = Rewrite(Forged(rootAttributes: $" xmlns:qemu='{QemuNs}'",
            root: "<qemu:commandline><qemu:arg value='-S'/></qemu:commandline><seclabel type='static' model='dac'><label>+0:+0</label></seclabel><pm><suspend-to-disk enabled='no'/></pm>"), Request());
        Assert.Contains(copy.LeftOut, l => l.StartsWith("<qemu:commandline>", StringComparison.Ordinal) && l.Contains(QemuNs, StringComparison.Ordinal));
        Assert.Contains(copy.LeftOut, l => l.StartsWith("<seclabel type='static'>", StringComparison.Ordinal) && l.Contains("the host's default security labels apply", StringComparison.Ordinal));
        Assert.Contains(copy.LeftOut, l => l.StartsWith("<metadata>", StringComparison.Ordinal));
        Assert.Contains(copy.LeftOut, l => l.StartsWith("<pm>", StringComparison.Ordinal));
        Assert.DoesNotContain("xmlns", copy.Xml, StringComparison.Ordinal);
    }

    [Fact]
    public void A_boot_tests_overlay_names_the_inspected_copy_as_its_whole_backing_chain()
    {
        var disks = new Dictionary<string, DomainCopyDisk>
        {
            ["vda"] = new(Folder + "/vm1.boottest.qcow2", "qcow2", "/backup/vm1/20261120-220000/vm1", "qcow2"),
            ["vdb"] = new(Folder + "/vdisk1.boottest.qcow2", "qcow2", "/backup/vm1/20261120-220000/vdisk1", "raw"),
        };
        var copy = Rewrite(Xmls.Domain("vm1", Boot, Data), Request(boot: true, disks: disks));
        var vdb = Root(copy).Element("devices")!.Elements("disk").Single(d => (string?)d.Element("target")?.Attribute("dev") == "vdb");
        var chain = vdb.Element("backingStore")!;
        Assert.Equal("raw", (string?)chain.Element("format")!.Attribute("type"));
        Assert.Equal("/backup/vm1/20261120-220000/vdisk1", (string?)chain.Element("source")!.Attribute("file"));
        var end = chain.Element("backingStore")!;
        Assert.False(end.HasElements || end.HasAttributes); // the copy has no backing file: QEMU follows nothing further
        Assert.Equal(["/backup/vm1/20261120-220000/vm1", "/backup/vm1/20261120-220000/vdisk1"], DomainXml.Parse(copy.Xml).Disks.Select(d => Assert.Single(d.BackingChain)));
    }

    [Fact]
    public void A_restore_keeps_interfaces_on_a_network_or_bridge_by_name_and_says_what_it_leaves_out()
    {
        var copy = Rewrite(Forged(devices: "<interface type='bridge'><mac address='52:54:00:aa:bb:cc'/><source bridge='pubnet'/><target dev='vnet9'/><model type='e1000'/><script path='/etc/qemu-ifup'/></interface>"
            + "<interface type='direct'><source dev='eth0' mode='bridge'/></interface><interface type='user'><model type='virtio'/><backend type='passt' logFile='/tmp/passt.log'/></interface>"), Request());
        var nics = Root(copy).Element("devices")!.Elements("interface").ToList();
        Assert.Equal(["network", "bridge", "user"], nics.Select(n => (string?)n.Attribute("type")));
        Assert.Equal("pubnet", (string?)nics[1].Element("source")!.Attribute("bridge"));
        Assert.Equal("e1000", (string?)nics[1].Element("model")!.Attribute("type"));
        Assert.All(nics, n => Assert.DoesNotContain(n.Elements(), e => e.Name.LocalName is "mac" or "target" or "script" or "backend"));
        Assert.Contains(copy.Notes, n => n.Contains("type 'direct' left out", StringComparison.Ordinal));
        Assert.DoesNotContain("/tmp/passt.log", copy.Xml, StringComparison.Ordinal);
    }

    [Fact]
    public void A_restore_keeps_pty_serial_ports_and_moves_file_and_unix_ones_into_its_folder()
    {
        var copy = Rewrite(Forged(devices: "<serial type='pty'><source path='/dev/pts/7'/><target port='1'/></serial><serial type='unix'><source mode='bind' path='/var/run/vm1.sock'/><target port='2'/></serial>"), Request());
        var serials = Root(copy).Element("devices")!.Elements("serial").ToList();
        Assert.Equal(["file", "pty", "unix"], serials.Select(s => (string?)s.Attribute("type")));
        Assert.Null(serials[1].Element("source"));
        Assert.Equal(Folder + "/vm1-copy-serial2.sock", (string?)serials[2].Element("source")!.Attribute("path"));
    }

    [Fact]
    public void A_boot_test_console_of_a_guest_with_only_a_pty_console_writes_to_its_own_log()
    {
        var xml = Xmls.Domain("vm1", Boot, Data).Replace("<serial type='file'>", "<serial type='pty'>", StringComparison.Ordinal).Replace("<console type='file'>", "<console type='pty'>", StringComparison.Ordinal);
        var copy = Rewrite(xml, Request(boot: true));
        var devices = Root(copy).Element("devices")!;
        Assert.Equal(copy.ConsoleLog, (string?)devices.Element("console")!.Element("source")!.Attribute("path"));
        Assert.Equal("file", (string?)devices.Element("console")!.Attribute("type"));
    }

    [Fact]
    public void A_boot_test_of_a_guest_with_a_serial_console_but_no_serial_port_element_still_logs_its_console()
    {
        var xml = XDocument.Parse(Xmls.Domain("vm1", Boot, Data));
        xml.Descendants("serial").Remove();
        var copy = Rewrite(xml.ToString(), Request(boot: true));
        var console = Root(copy).Element("devices")!.Element("console")!;
        Assert.Equal("file", (string?)console.Attribute("type"));
        Assert.Equal(copy.ConsoleLog, (string?)console.Element("source")!.Attribute("path"));
        Assert.StartsWith(Folder + "/", copy.ConsoleLog, StringComparison.Ordinal);
    }

    [Fact]
    public void Unreadable_xml_is_an_error_not_a_crash()
    {
        var ex = Assert.Throws<BackupException>(() => Rewrite("<domain><name>x", Request()));
        Assert.Equal(ErrorIds.DomainXmlNotRestorable, ex.ErrorId);
    }
}

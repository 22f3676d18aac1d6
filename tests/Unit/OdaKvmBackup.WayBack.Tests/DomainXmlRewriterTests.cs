using System.Xml.Linq;
using OdaKvmBackup.Core;
using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

public class DomainXmlRewriterTests
{
    private const string Boot = "/u05/app/sharedrepo/vmstore/.ACFS/snaps/vm_vm1/vm1";
    private const string Data = "/dev/mapper/vdisk1";
    private const string Folder = "/restore/vm1-copy";

    private static DomainCopyRequest Request(bool boot = false, IReadOnlyDictionary<string, (string, string)>? disks = null) => new(
        "vm1-copy",
        disks ?? new Dictionary<string, (string, string)> { ["vda"] = (Folder + "/vm1", "qcow2"), ["vdb"] = (Folder + "/vdisk1", "raw") },
        Folder, [Folder], DropInterfaces: boot, SerialToFile: boot);

    private static XElement Root(DomainCopy copy) => XDocument.Parse(copy.Xml).Root!;

    [Fact]
    public void The_copy_gets_the_new_name_and_no_uuid_id_or_mac_so_libvirt_makes_new_ones()
    {
        var copy = DomainXmlRewriter.Rewrite(Xmls.Domain("vm1", Boot, Data), Request());
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
        var copy = DomainXmlRewriter.Rewrite(Xmls.Domain("vm1", Boot, Data), Request());
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
        var copy = DomainXmlRewriter.Rewrite(Xmls.Domain("vm1", Boot, Data), Request());
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
        var root = Root(DomainXmlRewriter.Rewrite(Xmls.Domain("vm1", Boot, Data), Request()));
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
        var copy = DomainXmlRewriter.Rewrite(Xmls.Domain("vm1", Boot, Data).Replace("<serial type='file'>", "<serial type='pty'>", StringComparison.Ordinal), Request(boot: true));
        var devices = Root(copy).Element("devices")!;
        Assert.Empty(devices.Elements("interface"));
        Assert.Equal("file", (string?)devices.Element("serial")!.Attribute("type"));
        Assert.Equal(Folder + "/vm1-copy-serial0.log", copy.ConsoleLog);
        Assert.True(copy.HasGuestAgentChannel);
    }

    [Fact]
    public void A_disk_the_set_does_not_hold_is_left_out_and_said_so()
    {
        var copy = DomainXmlRewriter.Rewrite(Xmls.Domain("vm1", Boot, Data),
            Request(disks: new Dictionary<string, (string, string)> { ["vda"] = (Folder + "/vm1", "qcow2") }));
        Assert.Equal(["vda"], DomainXml.Parse(copy.Xml).Disks.Select(d => d.Target));
        Assert.Contains(copy.Notes, n => n.Contains("vdb", StringComparison.Ordinal) && n.Contains("not in the backup set", StringComparison.Ordinal));
        Assert.DoesNotContain(Data, copy.Xml, StringComparison.Ordinal);
    }

    public static TheoryData<string, string> Unsafe => new()
    {
        { "<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='3' slot='0' function='0'/></source></hostdev>", "<hostdev>" },
        { "<filesystem type='mount'><source dir='/srv/share'/><target dir='share'/></filesystem>", "<filesystem>" },
        { "<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>", "/dev/tpm0" },
        { "<serial type='dev'><source path='/dev/ttyS1'/><target port='1'/></serial>", "/dev/ttyS1" },
        { "<interface type='vhostuser'><source type='unix' path='/run/vhost.sock' mode='client'/><model type='virtio'/></interface>", "vhostuser" },
        { "<memory model='nvdimm'><source><path>/dev/pmem0</path></source><target><size unit='KiB'>524288</size></target></memory>", "/dev/pmem0" },
    };

    [Theory]
    [MemberData(nameof(Unsafe))]
    public void What_cannot_be_moved_out_of_the_source_VMs_files_is_refused_with_what_it_is(string device, string named)
    {
        var ex = Assert.Throws<BackupException>(() => DomainXmlRewriter.Rewrite(Xmls.Domain("vm1", Boot, Data, device), Request()));
        Assert.Equal(ErrorIds.DomainXmlNotRestorable, ex.ErrorId);
        Assert.Contains(named, ex.Message, StringComparison.Ordinal);
        Assert.NotNull(ex.RecommendedAction);
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
        var disks = new Dictionary<string, (string, string)> { ["vda"] = (Folder + "/vm1", "qcow2"), ["vdb"] = (Folder + "/vdisk1", "raw"), ["vdc"] = (Folder + "/x", "raw") };
        var ex = Assert.Throws<BackupException>(() => DomainXmlRewriter.Rewrite(Xmls.Domain("vm1", Boot, Data), Request(disks: disks)));
        Assert.Contains("vdc", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unreadable_xml_is_an_error_not_a_crash()
    {
        var ex = Assert.Throws<BackupException>(() => DomainXmlRewriter.Rewrite("<domain><name>x", Request()));
        Assert.Equal(ErrorIds.DomainXmlNotRestorable, ex.ErrorId);
    }
}

using OdaKvmBackup.HelpBuilder.Facts;

namespace OdaKvmBackup.HelpBuilder.Tests;

public class TypeNamesTests
{
    [Theory]
    [InlineData("System.String", "String")]
    [InlineData("System.String[]", "String[]")]
    [InlineData("System.Management.Automation.SwitchParameter", "SwitchParameter")]
    [InlineData("OdaKvmBackup.Core.Steps.VmDiskBackup", "VmDiskBackup")]
    [InlineData("System.Nullable`1[System.Int32]", "Nullable[Int32]")]
    [InlineData("System.Collections.Generic.Dictionary`2[System.String,System.Object]", "Dictionary[String,Object]")]
    public void A_type_is_shown_by_its_short_name_as_PlatyPS_does(string type, string expected)
    {
        Assert.Equal(expected, TypeNames.Short(type));
    }
}
